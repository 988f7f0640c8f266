//! What a big fleet costs the dashboard in a real headless Chromium, end to end: for each N, a
//! fresh service is sent N unicorns spread over 100 km around HQ (`stampede produce --unicorns N
//! --msgs N --spread-km 100 --to …/ingest`), then the dashboard is opened on it and measured:
//! what the page holds (it subscribes to its view), the map's frame time zoomed in on the city
//! and zoomed out to the world, the fleet table's refresh, and the page's JS heap. Prints
//! figures; asserts nothing.
//!
//! ```text
//! cargo build --release --bin stampede --example dashboard_load
//! target/release/examples/dashboard_load 1000 100000 1000000
//! ```
//!
//! A frame's time is `draw()` plus a one-pixel read-back, which makes the canvas finish
//! rasterising; the median of 15 is printed. Chromium runs with the tests' flags (software
//! rendering, no GPU): the worst case, a CI box or a VM. Tiles are off (no network).
//! `STAMPEDE_SCREENSHOT=DIR` also saves the two views of the largest fleet as PNGs.

#[path = "../tests/support/webdriver.rs"]
#[allow(dead_code, clippy::unwrap_used)]
mod webdriver;

use serde_json::json;

/// Moves the map; the example then waits for the service's answer to the new view.
const MOVE: &str = r#"
const [lat, lon, zoom] = arguments;
const s = window.stampede;
Object.assign(s.view, { lat, lon, zoom });
s.redraw();
return true;
"#;

const FRAMES: &str = r#"
const s = window.stampede;
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

/// Moves the map to `view` ([lat, lon, zoom]), waits for the service's snapshot or counts of
/// it, and measures frames there.
async fn at(browser: &webdriver::Browser, view: serde_json::Value) -> serde_json::Value {
    browser.eval(MOVE, view).await;
    browser
        .until(
            "the service's answer to the new view",
            "return window.stampede.viewAnswered() ? true : null",
            json!([]),
        )
        .await;
    browser.eval(FRAMES, json!([])).await
}

/// `stampede` beside this example's directory (target/PROFILE/examples/ → target/PROFILE/).
fn stampede_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/PROFILE");
    dir.join("stampede")
}

#[tokio::main]
async fn main() {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("fleet sizes, e.g. 1000 100000"))
        .collect();
    if sizes.is_empty() {
        sizes = vec![1_000, 100_000, 1_000_000];
    }
    let bin = stampede_bin();
    assert!(
        bin.exists(),
        "{} is missing: build it (cargo build --release --bin stampede)",
        bin.display()
    );
    println!("| fleet | records the page holds | city view (zoom 12, ~35 km across): frame | world view: frame | fleet table refresh | JS heap |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let last = sizes.last().copied();
    for n in sizes {
        let dir = std::env::temp_dir().join(format!(
            "stampede-dashboard-load-{}-{n}",
            std::process::id()
        ));
        let mut config = stampede::config::Config::default();
        config.web.listen = "127.0.0.1:0".into();
        config.web.tile_url = String::new();
        config.web.silent_after_secs = 3_600;
        config.store.path = dir.clone();
        config.validate().expect("config");
        let app = stampede::app::start(config)
            .await
            .expect("start the service");
        let sent = std::process::Command::new(&bin)
            .args([
                "produce",
                "--unicorns",
                &n.to_string(),
                "--msgs",
                &n.to_string(),
                "--rate",
                "max",
                "--spread-km",
                "100",
                "--seed",
                "9",
                "--quiet",
                "--to",
            ])
            .arg(format!("http://{}/ingest", app.addr))
            .status()
            .expect("run stampede produce");
        assert!(sent.success(), "produce failed");
        let browser = webdriver::Browser::start().await;
        browser.goto(&format!("http://{}/", app.addr)).await;
        browser
            .until(
                "the dashboard, live, with the fleet's size",
                "const s = window.stampede; return s && s.outline().coarse && s.total() > 0 && document.getElementById('status').textContent === 'live' ? true : null",
                json!([]),
            )
            .await;
        let held = browser
            .eval("return window.stampede.unicorns().length", json!([]))
            .await;
        let city = at(&browser, json!([40.749167, -73.985184, 12])).await;
        let world = at(&browser, json!([20.0, 0.0, 2])).await;
        let table = browser.eval(TABLE, json!([])).await;
        let heap = browser
            .eval(
                "return performance.memory ? performance.memory.usedJSHeapSize : 0",
                json!([]),
            )
            .await;
        let shown = |v: &serde_json::Value| {
            if v["clusters"].as_u64().unwrap_or(0) > 0 {
                format!("{} circles", v["clusters"])
            } else {
                format!("{} markers", v["inView"])
            }
        };
        println!(
            "| {n} | {held} | {:.1} ms ({}) | {:.1} ms ({}) | {:.0} ms | {:.0} MB |",
            city["ms"].as_f64().unwrap_or(0.0),
            shown(&city),
            world["ms"].as_f64().unwrap_or(0.0),
            shown(&world),
            table.as_f64().unwrap_or(0.0),
            heap.as_f64().unwrap_or(0.0) / 1e6
        );
        // STAMPEDE_SCREENSHOT=DIR: the city and world views of the largest fleet, as PNGs.
        if let (Ok(shots), Some(true)) =
            (std::env::var("STAMPEDE_SCREENSHOT"), last.map(|l| l == n))
        {
            for (name, view) in [
                ("city", json!([40.749167, -73.985184, 12])),
                ("world", json!([20.0, 0.0, 2])),
            ] {
                at(&browser, view).await;
                let path = std::path::Path::new(&shots).join(format!("dashboard-{name}.png"));
                std::fs::write(&path, browser.screenshot().await).expect("write the screenshot");
                println!("screenshot: {}", path.display());
            }
        }
        browser.quit().await;
        app.stop().await.expect("stop");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
