//! The dashboard in a real headless Chromium: unicorns appear in the table and on the map, a
//! click on a marker opens a popup with the vitals, and a silent unicorn disappears.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::service::{line, post_json, start, temp_dir};
use crate::support::webdriver::Browser;

fn now_text(offset_ms: i64) -> String {
    let t = chrono::Utc::now() + chrono::Duration::milliseconds(offset_ms);
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_and_drops_silent_unicorns() {
    let dir = temp_dir("browser");
    let app = start(&dir, |c| c.web.silent_after_secs = 3).await;
    let addr = app.addr;
    let send = move |names: &'static [(&'static str, i64, i64, f64)]| async move {
        let body: Vec<String> = names
            .iter()
            .map(|(n, health, magic, lat)| {
                line(n, &now_text(0), 30.0, *health, *magic).replace("40.75", &lat.to_string())
            })
            .collect();
        let (status, _) = post_json(addr, "/ingest", body.join("\n"), None).await;
        assert!(status.is_success());
    };
    const FLEET: &[(&str, i64, i64, f64)] = &[
        ("Shadowfax", 151, 99, 40.752),
        ("Bucephalus", 140, 150, 40.746),
        ("Rocinante", 120, 130, 40.749),
    ];
    const TWO: &[(&str, i64, i64, f64)] = &[
        ("Shadowfax", 151, 99, 40.752),
        ("Bucephalus", 140, 150, 40.746),
    ];
    // Every unicorn reports twice a second until the test silences Rocinante.
    let rocinante_alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let alive = std::sync::Arc::clone(&rocinante_alive);
    let keep_alive = tokio::spawn(async move {
        loop {
            let fleet = if alive.load(std::sync::atomic::Ordering::Relaxed) {
                FLEET
            } else {
                TWO
            };
            send(fleet).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/")).await;
    // The table lists the three.
    let rows = browser
        .until(
            "three rows in the fleet table",
            "const r = [...document.querySelectorAll('#fleet tbody tr')].map(t => t.dataset.name); return r.length === 3 ? r : null;",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!(["Bucephalus", "Rocinante", "Shadowfax"]));
    assert_eq!(
        browser
            .eval(
                "return document.getElementById('status').textContent",
                json!([])
            )
            .await,
        "live"
    );
    // On the map, at their positions (Shadowfax north of HQ, Bucephalus south).
    let on_map = browser
        .eval("return window.stampede.unicorns().sort()", json!([]))
        .await;
    assert_eq!(on_map, json!(["Bucephalus", "Rocinante", "Shadowfax"]));
    let pos = |name: &str| {
        let name = name.to_owned();
        let b = &browser;
        async move {
            b.eval(
                "const p = window.stampede.screenPosition(arguments[0]); const r = document.getElementById('map').getBoundingClientRect(); return p && {x: p.x + r.left, y: p.y + r.top};",
                json!([name]),
            )
            .await
        }
    };
    let shadowfax = pos("Shadowfax").await;
    let bucephalus = pos("Bucephalus").await;
    assert!(
        shadowfax["y"].as_f64().unwrap() < bucephalus["y"].as_f64().unwrap(),
        "north is up"
    );

    // A click on the marker opens the popup with name, speed in mph and the vitals.
    browser
        .click_at(
            shadowfax["x"].as_f64().unwrap(),
            shadowfax["y"].as_f64().unwrap(),
        )
        .await;
    let popup: Value = browser
        .until(
            "the popup",
            "const p = document.getElementById('popup'); return !p.hidden && p.innerText;",
            json!([]),
        )
        .await;
    let text = popup.as_str().unwrap();
    assert!(text.contains("Shadowfax"), "{text}");
    assert!(text.contains("67.1 mph"), "30 m/s × 2.23694: {text}");
    assert!(
        text.contains("151 points") && text.contains("99 points"),
        "{text}"
    );

    // Rocinante falls silent; the others keep flying. It leaves the table and the map.
    rocinante_alive.store(false, std::sync::atomic::Ordering::Relaxed);
    let rows = browser
        .until(
            "Rocinante to disappear",
            "const r = [...document.querySelectorAll('#fleet tbody tr')].map(t => t.dataset.name); return r.length === 2 && !window.stampede.unicorns().includes('Rocinante') ? r : null;",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!(["Bucephalus", "Shadowfax"]));
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a screenshot of the dashboard");
    if let Ok(path) = std::env::var("STAMPEDE_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    keep_alive.abort();
    browser.quit().await;
    app.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
