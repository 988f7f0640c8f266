// Starts kinesalite (Kinesis) and dynalite (DynamoDB) in memory on 127.0.0.1, on the ports given:
//   node start.js KINESIS_PORT DYNAMODB_PORT
// Their CLIs listen on every interface, hence this launcher.
const kinesalite = require('kinesalite');
const dynalite = require('dynalite');

const [kinesisPort, dynamoPort] = process.argv.slice(2).map(Number);
const host = '127.0.0.1';
kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 10000 })
  .listen(kinesisPort, host, (err) => {
    if (err) throw err;
    console.log(`kinesalite on ${host}:${kinesisPort}`);
  });
dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 })
  .listen(dynamoPort, host, (err) => {
    if (err) throw err;
    console.log(`dynalite on ${host}:${dynamoPort}`);
  });
