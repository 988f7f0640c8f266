//! Arbitrary bytes into the decoder, a bounded number of cases per run: it must never panic, and
//! its verdict must agree with serde_json (the reference) on what is JSON at all and with the
//! reference validation on everything else.
//!
//! Inputs are mutations of valid records (bit flips, insertions of JSON-significant bytes,
//! deletions, duplicated and spliced ranges, truncation) plus fully random byte strings, from a
//! fixed seed so that a failure reproduces. Set `STAMPEDE_FUZZ_CASES` to run more.

use stampede::decode::decode;
use stampede::record::RejectReason;
use stampede_producers::Rng;

use crate::support::reference;

const SEEDS: &[&str] = &[
    r#"{"Distance":29.83712,"HealthPoints":151,"Latitude":40.749167,"Longitude":-73.985184,"MagicPoints":148,"Name":"Shadowfax","StatusTime":"2018-03-18 03:20:01.189"}"#,
    r#"{"Name":"Fela\u0072\u00f3f \ud83e\udd84","StatusTime":"2018-03-18T03:20:01Z","Latitude":-90,"Longitude":180.0,"Distance":0,"HealthPoints":-9223372036854775808,"MagicPoints":9223372036854775807,"InputData":"Unicornerror"}"#,
    r#" { "Extra" : [ 1 , { "a" : null , "b" : [ true , false , "x\"y" ] } , -0.5e-3 ] , "Name" : "独角兽" , "StatusTime" : "2018-03-18 03:20:01+05:30" , "Latitude" : 1e1 , "Longitude" : -1E-1 , "Distance" : 3.25 , "HealthPoints" : 0 , "MagicPoints" : -1 } "#,
    r#"[{"Name":"x"},"\u0000",123,null]"#,
];

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u",
    b"\\ud83e",
    b"null",
    b"true",
    b"-",
    b"0",
    b"1e400",
    b".",
    b"e",
    b"\n",
    b" ",
    b"\x00",
    b"\x7f",
    b"\xc3\xa9",
    b"\xff",
    b"\xed\xa0\x80",
    b"\"Name\":",
    b"\"StatusTime\":",
    b"\"HealthPoints\":",
    b"2018-02-29 00:00:00",
    b"99999999999999999999",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len() as u64;
        let at = rng.below(len + 1) as usize;
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = rng.below(len) as usize;
                input[i] ^= 1 << rng.below(8);
            }
            1 => {
                let tok = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                input.splice(at..at, tok.iter().copied());
            }
            2 if !input.is_empty() => {
                let end = (at + rng.below(8) as usize + 1).min(input.len());
                input.drain(at.min(end)..end);
            }
            3 if !input.is_empty() => {
                let from = rng.below(len) as usize;
                let to = (from + rng.below(16) as usize + 1).min(input.len());
                let piece = input[from..to].to_vec();
                input.splice(at..at, piece);
            }
            4 => input.truncate(at),
            _ => input.push(rng.below(256) as u8),
        }
    }
}

fn check(input: &[u8]) {
    let ours = decode(input);
    let json = serde_json::from_slice::<serde_json::Value>(input);
    if let Err(e) = &json {
        let msg = e.to_string();
        // serde_json refuses numbers beyond f64 and nesting beyond 128 outright when it builds a
        // Value; the contract reads those as out-of-range values (or skips them).
        if msg.contains("number out of range") || msg.contains("recursion limit") {
            return;
        }
    }
    let malformed = matches!(&ours, Err(r) if r.reason == RejectReason::MalformedJson);
    assert_eq!(
        malformed,
        json.is_err(),
        "malformed_json verdict differs from serde_json on {:?}: ours {ours:?}, serde_json {json:?}",
        String::from_utf8_lossy(input)
    );
    let verdict = reference::validate(input);
    if verdict.is_ok() {
        assert!(
            ours.is_ok(),
            "the reference accepts, we reject ({ours:?}): {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let Ok(record) = ours else { return };

    // Accepted: the reference must accept it with the same values.
    let (name, time, distance, health, magic) = verdict.unwrap_or_else(|r| {
        panic!(
            "we accept, the reference rejects ({r}): {:?}",
            String::from_utf8_lossy(input)
        )
    });
    assert_eq!(
        (
            record.name.as_ref(),
            record.status_time,
            record.distance,
            record.health_points,
            record.magic_points
        ),
        (name.as_str(), time, distance, health, magic)
    );
}

#[test]
fn decoder_survives_and_agrees_on_arbitrary_bytes() {
    let cases: u64 = std::env::var("STAMPEDE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60_000);
    let mut rng = Rng::new(0x5eed);
    let mut accepted = 0;
    for i in 0..cases {
        let mut input = if i % 10 == 0 {
            (0..rng.below(64)).map(|_| rng.below(256) as u8).collect()
        } else {
            SEEDS[rng.below(SEEDS.len() as u64) as usize]
                .as_bytes()
                .to_vec()
        };
        if i % 10 != 0 {
            mutate(&mut rng, &mut input);
        }
        check(&input);
        accepted += u32::from(decode(&input).is_ok());
    }
    // The mutations are mild enough that some records still pass: the comparison of accepted
    // values is exercised, not only the reject path.
    assert!(accepted > 100, "only {accepted} accepted inputs");
}

#[test]
fn decoder_survives_huge_and_deep_inputs() {
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        decode(deep.as_bytes()).unwrap_err().reason,
        RejectReason::TooLarge
    );
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(20_000), "]".repeat(20_000));
    assert_eq!(
        decode(deep.as_bytes()).unwrap_err().reason,
        RejectReason::MalformedJson
    );
    let many_keys: String = (0..5_000).map(|i| format!("\"k{i}\":{i},")).collect();
    let rec = format!("{{{many_keys}\"Name\":\"x\"}}");
    assert_eq!(
        decode(rec.as_bytes()).unwrap_err().reason,
        RejectReason::MissingField
    );
}
