//! What a big fleet costs the dashboard in a real headless Chromium: frame time of the map and
//! the page's JS heap with N unicorns in the page, zoomed in on a city and zoomed out to the
//! world, and the time to refresh the fleet table. Prints figures; asserts nothing.
//!
//! ```text
//! cargo run --release --example dashboard_load -- 1000 100000 1000000
//! ```
//!
//! The unicorns are handed to the page as telemetry frames of 10,000 (the page's own frame
//! handler), spread over a 20 km square around Wild Rydes HQ, so this measures the browser's
//! share alone: no network, no server. A frame's time is `draw()` plus a one-pixel read-back,
//! which makes the canvas finish rasterising; the median of 15 is printed. Chromium runs with
//! the tests' flags (software rendering, no GPU): the worst case, a CI box or a VM.
//! `STAMPEDE_SCREENSHOT=DIR` also saves the two views of the largest fleet as PNGs.

#[path = "../tests/support/webdriver.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod webdriver;

use serde_json::json;

const FILL: &str = r#"
const [n, from] = arguments;
const s = window.stampede;
for (let start = from; start < n; start += 10000) {
  const records = [];
  for (let i = start; i < Math.min(n, start + 10000); i++) {
    const a = Math.sin(i * 12.9898) * 43758.5453, b = Math.sin(i * 78.233) * 12543.123;
    records.push({ Name: "u" + i, StatusTime: "2026-12-01 00:00:00.000", LastSeen: "2026-12-01 00:00:00.000",
      Latitude: 40.749167 + ((a - Math.floor(a)) - 0.5) * 0.18, Longitude: -73.985184 + ((b - Math.floor(b)) - 0.5) * 0.24,
      Distance: 5, HealthPoints: 100 + i % 60, MagicPoints: 100 + i % 70 });
  }
  s.take({ type: "telemetry", records });
}
return s.unicorns().length;
"#;

const FRAMES: &str = r#"
const [lat, lon, zoom] = arguments;
const s = window.stampede;
Object.assign(s.view, { lat, lon, zoom });
const c = document.getElementById("map").getContext("2d"), times = [];
for (let i = 0; i < 15; i++) {
  const t0 = performance.now();
  s.redraw();
  c.getImageData(0, 0, 1, 1);
  times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const st = s.drawStats();
return { ms: times[7], inView: st.inView, clusters: st.clusters };
"#;

const TABLE: &str = r#"
const t0 = performance.now();
window.stampede.renderTable();
return performance.now() - t0;
"#;

#[tokio::main]
async fn main() {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("fleet sizes, e.g. 1000 100000"))
        .collect();
    if sizes.is_empty() {
        sizes = vec![1_000, 100_000, 1_000_000];
    }
    sizes.sort_unstable();
    let dir = std::env::temp_dir().join(format!("stampede-dashboard-load-{}", std::process::id()));
    let mut config = stampede::config::Config::default();
    config.web.listen = "127.0.0.1:0".into();
    config.web.tile_url = String::new();
    config.store.path = dir.clone();
    config.validate().expect("config");
    let app = stampede::app::start(config)
        .await
        .expect("start the service");
    let browser = webdriver::Browser::start().await;
    browser.goto(&format!("http://{}/", app.addr)).await;
    browser
        .until(
            "the dashboard",
            "return window.stampede && window.stampede.outline().coarse ? true : null",
            json!([]),
        )
        .await;
    println!("| unicorns | city view: in view, frame | world view: frame | fleet table refresh | JS heap |");
    println!("| --- | --- | --- | --- | --- |");
    let mut have = 0;
    for n in sizes {
        let count = browser.eval(FILL, json!([n, have])).await;
        have = n;
        assert_eq!(count.as_u64(), Some(n as u64), "the page holds the fleet");
        let city = browser
            .eval(FRAMES, json!([40.749167, -73.985184, 12]))
            .await;
        let world = browser.eval(FRAMES, json!([20.0, 0.0, 2])).await;
        let table = browser.eval(TABLE, json!([])).await;
        let heap = browser
            .eval(
                "return performance.memory ? performance.memory.usedJSHeapSize : 0",
                json!([]),
            )
            .await;
        println!(
            "| {n} | {} ({}), {:.1} ms | {:.1} ms | {:.0} ms | {:.0} MB |",
            city["inView"],
            if city["clusters"].as_u64().unwrap_or(0) > 0 {
                format!("{} clusters", city["clusters"])
            } else {
                "markers".into()
            },
            city["ms"].as_f64().unwrap_or(0.0),
            world["ms"].as_f64().unwrap_or(0.0),
            table.as_f64().unwrap_or(0.0),
            heap.as_f64().unwrap_or(0.0) / 1e6
        );
    }
    // STAMPEDE_SCREENSHOT=DIR: the city and world views of the largest fleet, as PNGs.
    if let Ok(shots) = std::env::var("STAMPEDE_SCREENSHOT") {
        for (name, view) in [
            ("city", json!([40.749167, -73.985184, 12])),
            ("world", json!([20.0, 0.0, 2])),
        ] {
            browser.eval(FRAMES, view).await;
            let path = std::path::Path::new(&shots).join(format!("dashboard-{name}.png"));
            std::fs::write(&path, browser.screenshot().await).expect("write the screenshot");
            println!("screenshot: {}", path.display());
        }
    }
    browser.quit().await;
    app.stop().await.expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}
