//! The dashboard in a real headless Chromium: unicorns appear in the table and on the map, a
//! click on a marker opens a popup with the vitals, and a silent unicorn disappears; the read
//! token's sign-in, over HTTP and over TLS; and a hostile page of another origin that can
//! neither post telemetry nor open the live feed.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::service::{line, post_json, temp_dir, TestApp};
use crate::support::webdriver::Browser;

fn now_text(offset_ms: i64) -> String {
    let t = chrono::Utc::now() + chrono::Duration::milliseconds(offset_ms);
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_and_drops_silent_unicorns() {
    let app = TestApp::start("browser", |c| c.web.silent_after_secs = 3).await;
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
    app.stop().await;
}

/// Rows of the fleet table once the feed is live and lists exactly one unicorn.
const FLEET_LIVE: &str = "const rows = [...document.querySelectorAll('#fleet tbody tr')].map(t => t.dataset.name); return document.getElementById('status').textContent === 'live' && rows.length === 1 ? rows : null";

/// Waits for the dashboard's sign-in dialog and submits `token` through it.
async fn sign_in(browser: &Browser, token: &str) {
    browser
        .until(
            "the sign-in dialog",
            "return document.getElementById('signin').open",
            json!([]),
        )
        .await;
    browser
        .eval(
            "document.getElementById('signin-token').value = arguments[0]; document.getElementById('signin-form').requestSubmit(); return true",
            json!([token]),
        )
        .await;
}

type Page = std::sync::Arc<std::sync::Mutex<String>>;

/// Serves one page (set through the handle) to every request on 127.0.0.1: a page of another
/// origin, since another port is another origin.
async fn serve_page() -> (std::net::SocketAddr, Page) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let page = Page::default();
    let html = std::sync::Arc::clone(&page);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let html = html.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, page)
}

/// What a hostile page does: a `text/plain` POST of a record (a "simple request", sent without
/// a preflight) and a WebSocket to the live feed. It reports in `window.attack`.
fn attack_page(target: std::net::SocketAddr, name: &str) -> String {
    let record = line(name, &now_text(0), 1.0, 150, 150).replace('"', "\\\"");
    format!(
        r#"<!doctype html><title>cute unicorns</title><script>
window.attack = {{ post: "pending", ws: "pending" }};
fetch("http://{target}/ingest", {{ method: "POST", mode: "no-cors",
  headers: {{ "Content-Type": "text/plain" }}, body: "{record}" }})
  .then(() => attack.post = "done", () => attack.post = "done");
const ws = new WebSocket("ws://{target}/ws");
ws.onopen = () => attack.ws = "open";
ws.onerror = () => attack.ws = "refused";
</script>"#
    )
}

/// A page from another origin, in a real Chromium, tries to post telemetry and to read the live
/// feed: both fail and nothing is ingested. The control: the same page from an origin listed in
/// `web.allowed_origins` gets through, so it is the service that refuses, not the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_another_origin_can_neither_post_nor_open_the_feed() {
    let browser = Browser::start().await;
    let app = TestApp::start("browser-attack", |_| {}).await;
    let (evil, page) = serve_page().await;
    *page.lock().unwrap() = attack_page(app.addr, "Evil");
    browser.goto(&format!("http://{evil}/")).await;
    let done = "return window.attack && window.attack.post !== 'pending' && window.attack.ws !== 'pending' ? window.attack : null";
    let outcome = browser.until("the attack to finish", done, json!([])).await;
    assert_eq!(outcome, json!({ "post": "done", "ws": "refused" }));
    let (_, metrics) =
        crate::support::service::request(app.addr, hyper::Method::GET, "/metrics", "", None).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("stampede_records_in_total 0"),
        "nothing ingested"
    );
    assert_eq!(
        crate::support::service::get_json(app.addr, "/api/unicorns").await,
        json!([])
    );
    app.stop().await;

    // The control: from an origin listed in web.allowed_origins, the same page's record
    // arrives and its feed opens.
    let (friendly, page) = serve_page().await;
    let origin = format!("http://{friendly}");
    let app = TestApp::start("browser-allowed", |c| c.web.allowed_origins = vec![origin]).await;
    *page.lock().unwrap() = attack_page(app.addr, "Friend");
    browser.goto(&format!("http://{friendly}/")).await;
    let outcome = browser
        .until("the allowed page to finish", done, json!([]))
        .await;
    assert_eq!(outcome, json!({ "post": "done", "ws": "open" }));
    let fleet = crate::support::poll::eventually("Friend ingested", || async {
        let v = crate::support::service::get_json(app.addr, "/api/unicorns").await;
        (v.as_array()?.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(fleet[0]["Name"], "Friend");
    browser.quit().await;
    app.stop().await;
}

/// With `web.read_token`, the dashboard asks for the token once: a wrong one is refused with a
/// message that says what to check, the right one shows the fleet live, and a reload of the tab
/// keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_the_read_token_once_and_says_when_it_is_wrong() {
    // A read token goes with an admin token (web.read_token alone is refused at start).
    let app = TestApp::start("browser-token", |c| {
        c.web.read_token = "s3cret-R3ad".into();
        c.web.token = "adm1n-T0ken".into();
    })
    .await;
    let (status, _) = post_json(
        app.addr,
        "/ingest",
        line("Shadowfax", &now_text(0), 1.0, 150, 150),
        Some("adm1n-T0ken"),
    )
    .await;
    assert!(status.is_success());
    let browser = Browser::start().await;
    browser.goto(&format!("http://{}/", app.addr)).await;
    sign_in(&browser, "wrong").await;
    let error = browser
        .until(
            "the wrong token's message",
            "const e = document.getElementById('signin-error'); return document.getElementById('signin').open && !e.hidden ? e.textContent : null",
            json!([]),
        )
        .await;
    assert!(
        error.as_str().unwrap().contains("refused that token")
            && error.as_str().unwrap().contains("web.read_token"),
        "{error}"
    );
    sign_in(&browser, "s3cret-R3ad").await;
    let live = FLEET_LIVE;
    let rows = browser.until("the fleet, live", live, json!([])).await;
    assert_eq!(rows, json!(["Shadowfax"]));
    // Kept for the tab: a reload asks nothing.
    browser
        .eval(
            "window.beforeReload = true; location.reload(); return true",
            json!([]),
        )
        .await;
    let reloaded = format!("if (window.beforeReload) return null; {live}");
    let rows = browser
        .until("the fleet after a reload", &reloaded, json!([]))
        .await;
    assert_eq!(rows, json!(["Shadowfax"]));
    assert_eq!(
        browser
            .eval("return document.getElementById('signin').open", json!([]))
            .await,
        json!(false)
    );
    browser.quit().await;
    app.stop().await;
}

/// Over HTTPS and WSS, with a read token: the same dashboard signs in and goes live (the page
/// picks `wss://` itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_over_tls_with_a_read_token() {
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    let app = TestApp::start("browser-tls", |c| {
        c.web.read_token = "tls-R3ad".into();
        c.web.token = "tls-Adm1n".into();
        c.web.tls_cert = tls.join("cert.pem").display().to_string();
        c.web.tls_key = tls.join("key.pem").display().to_string();
    })
    .await;
    // Straight into the engine: this test's HTTP client speaks no TLS.
    let payload = bytes::Bytes::from(line("Shadowfax", &now_text(0), 1.0, 150, 150));
    let (reply, accepted) = tokio::sync::oneshot::channel();
    app.app()
        .ingest
        .send(stampede::pipeline::Batch {
            records: std::iter::once(0..payload.len()).collect(),
            payload,
            positions: Vec::new(),
            sequences: Vec::new(),
            reply: Some(reply),
            decoded: Vec::new(),
            plain_lines: false,
        })
        .await
        .unwrap();
    assert_eq!(accepted.await.unwrap().accepted, 1);
    let browser = Browser::start().await;
    browser
        .goto(&format!("https://localhost:{}/", app.addr.port()))
        .await;
    sign_in(&browser, "tls-R3ad").await;
    let live = FLEET_LIVE;
    let rows = browser
        .until("the fleet, live over WSS", live, json!([]))
        .await;
    assert_eq!(rows, json!(["Shadowfax"]));
    assert_eq!(
        browser.eval("return location.protocol", json!([])).await,
        "https:"
    );
    browser.quit().await;
    app.stop().await;
}

/// `stampede demo` as a new user runs it: a drifting unicorn's alerts fire (listed in the
/// alerts panel, marked in the fleet table) and resolve (in the recent changes), in the real
/// browser. `--drift 5` makes the demo's two minutes a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_alerts_firing_and_resolving() {
    let dir = temp_dir("browser-demo-alerts");
    let demo =
        crate::support::process::start_service(&["demo", "--unicorns", "4", "--drift", "5"], &dir);
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", demo.url)).await;
    // The fourth unicorn (index 3) drifts; its name is the fleet's fourth.
    let firing = browser
        .until(
            "an alert firing in the panel and marked in the table",
            "const f = [...document.querySelectorAll('#firing li[data-alert-id]')].map(l => l.dataset.name); const marked = [...document.querySelectorAll('#fleet tbody tr.alerting')].map(t => t.dataset.name); return f.length && marked.length && f.every(n => marked.includes(n)) ? {firing: f, badge: document.getElementById('alert-count').textContent} : null;",
            json!([]),
        )
        .await;
    let name = firing["firing"][0].as_str().unwrap().to_owned();
    assert!(
        firing["badge"].as_str().unwrap().ends_with("firing"),
        "{firing}"
    );
    let resolved = browser
        .until(
            "the alert resolving",
            "const n = arguments[0]; const changes = [...document.querySelectorAll('#changes li[data-alert-id]')].filter(l => l.dataset.name === n).map(l => l.className); return changes.includes('resolved') && ![...document.querySelectorAll('#firing li[data-alert-id]')].some(l => l.dataset.name === n) ? changes : null;",
            json!([name]),
        )
        .await;
    assert!(
        resolved.as_array().unwrap().iter().any(|c| c == "firing"),
        "{resolved}"
    );
    // A page opened later lists the changes made before it (from the API).
    browser.goto(&format!("{}/", demo.url)).await;
    browser
        .until(
            "the earlier changes after a reload",
            "const n = arguments[0]; const c = [...document.querySelectorAll('#changes li[data-alert-id]')].filter(l => l.dataset.name === n).map(l => l.className); return c.includes('resolved') && c.includes('firing') ? c : null;",
            json!([name]),
        )
        .await;
    // The API agrees with the page.
    let all = crate::support::process::http_get_json(&format!(
        "{}/api/alerts?state=all&name={name}",
        demo.url
    ));
    let states: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["State"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"firing") && states.contains(&"resolved"),
        "{all}"
    );
    browser.quit().await;
    assert!(crate::support::process::interrupt(demo).success());
}

/// A unicorn's trip from the archive, in the real browser: `stampede demo --archive`, select a
/// unicorn, "Show trip": its archived positions are drawn, oldest first (aws-serverless-workshops
/// issue 81 asked for this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_a_unicorns_trip_from_the_archive() {
    let dir = temp_dir("browser-trip");
    let archive = dir.join("archive");
    let demo = crate::support::process::start_service_with(
        &[
            "demo",
            "--unicorns",
            "3",
            "--archive",
            archive.to_str().unwrap(),
        ],
        &dir,
        &[("STAMPEDE_ARCHIVE_BUFFER_SECS", "1")],
    );
    crate::support::poll::wait_until("records archived", || {
        crate::support::process::metric(&demo.url, "stampede_archive_records_total") >= 9
    });
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", demo.url)).await;
    let name = browser
        .until(
            "a unicorn in the table, selected",
            "const tr = document.querySelector('#fleet tbody tr[data-name]'); if (!tr) return null; tr.click(); return tr.dataset.name;",
            json!([]),
        )
        .await;
    let name = name.as_str().unwrap().to_owned();
    browser
        .eval(
            "document.getElementById('trip-show').click(); return true;",
            json!([]),
        )
        .await;
    let trip = browser
        .until(
            "the trip drawn",
            "const t = window.stampede.trip(); const s = document.getElementById('trip-status').textContent; return t && t.points.length >= 2 && s.includes('positions') ? {name: t.name, points: t.points, status: s} : null;",
            json!([]),
        )
        .await;
    assert_eq!(trip["name"], name.as_str());
    let times: Vec<&str> = trip["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[2].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );
    // The service's own answer is what the page drew.
    let api = crate::support::process::http_get_json(&format!(
        "{}/api/trip?name={name}&to={}",
        demo.url,
        times.last().unwrap().replace(' ', "%20")
    ));
    assert_eq!(
        api["points"].as_array().unwrap()[..times.len()],
        trip["points"].as_array().unwrap()[..]
    );
    browser.quit().await;
    assert!(crate::support::process::interrupt(demo).success());
}

/// A tile server on 127.0.0.1 that answers every path with a plain SVG tile (and lets any page
/// use it) and keeps the paths it was asked for.
async fn serve_tiles() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let paths = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let paths = std::sync::Arc::clone(&paths);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                if let Some(path) = head.split_whitespace().nth(1) {
                    paths.lock().unwrap().push(path.to_owned());
                }
                let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256"><rect width="256" height="256" fill="#808000"/></svg>"##;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: image/svg+xml\r\naccess-control-allow-origin: *\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{svg}",
                    svg.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

/// The map is never blank: with tiles that do not load (offline), the embedded Natural Earth
/// outline shows land and sea where they are, and zoomed in the finer outline comes; tiles that
/// load are asked for by the configured template at the view's tile coordinates; the tiles'
/// credit is on the map, a link only when a URL is configured. By default the tiles are
/// OpenStreetMap's, credited with a link to its copyright page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_shows_land_offline_and_tiles_with_their_credit() {
    let defaults = stampede::config::Config::default();
    assert_eq!(
        defaults.web.tile_url,
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    );
    assert_eq!(
        defaults.web.tile_attribution,
        "© OpenStreetMap contributors"
    );
    assert_eq!(
        defaults.web.tile_attribution_url,
        "https://www.openstreetmap.org/copyright"
    );
    let browser = Browser::start().await;

    // Offline: nothing listens where the tiles are.
    let app = TestApp::start("browser-map-offline", |c| {
        c.web.tile_url = "http://127.0.0.1:9/{z}/{x}/{y}.png".into();
    })
    .await;
    browser.goto(&format!("http://{}/", app.addr)).await;
    browser
        .until(
            "the land outline, and a tile that failed",
            "const s = window.stampede; return s && s.outline().coarse && s.tiles().failed > 0 ? true : null",
            json!([]),
        )
        .await;
    // Zoomed out over Africa and the Atlantic: land is land-coloured, sea sea-coloured.
    let colours = browser
        .eval(
            "const s = window.stampede; Object.assign(s.view, { lat: 5, lon: 0, zoom: 2 }); s.redraw(); return [s.pixelAt(12.3, 21.7), s.pixelAt(-3.7, -27.3)]",
            json!([]),
        )
        .await;
    assert_eq!(
        colours,
        json!([[246, 243, 234, 255], [220, 232, 243, 255]]),
        "Chad is land and the mid-Atlantic is sea"
    );
    let credit = browser
        .eval(
            "const a = document.querySelector('#attribution a'); return [document.getElementById('attribution').textContent, a && a.href]",
            json!([]),
        )
        .await;
    assert_eq!(
        credit,
        json!([
            "© OpenStreetMap contributors · Natural Earth",
            "https://www.openstreetmap.org/copyright"
        ])
    );
    // A big fleet in view is drawn as clusters whose counts add up to it; zoomed in on a
    // street, the few in view are markers again.
    let drawn = browser
        .eval(
            r#"const s = window.stampede, records = [];
for (let i = 0; i < 5000; i++) records.push({ Name: "c" + i, StatusTime: "2026-12-01 00:00:00.000",
  LastSeen: "2026-12-01 00:00:00.000", Latitude: 40.70 + (i % 100) * 0.001, Longitude: -74.0 + Math.floor(i / 100) * 0.001,
  Distance: 1, HealthPoints: 150, MagicPoints: 150 });
s.take({ type: "telemetry", records });
Object.assign(s.view, { lat: 40.75, lon: -73.975, zoom: 12 }); s.redraw();
const city = s.drawStats();
Object.assign(s.view, { lat: 40.7005, lon: -73.9995, zoom: 18 }); s.redraw();
return [city, s.drawStats()];"#,
            json!([]),
        )
        .await;
    assert_eq!(drawn[0]["inView"], 5000);
    assert!(drawn[0]["clusters"].as_u64().unwrap() > 1, "{drawn}");
    assert!(
        drawn[0]["clustered"] == 5000,
        "every unicorn in a cluster: {drawn}"
    );
    assert!(drawn[1]["inView"].as_u64().unwrap() < 100, "{drawn}");
    assert_eq!(drawn[1]["clusters"], 0, "{drawn}");
    // Zoomed in, the 1:50M outline is fetched and drawn.
    browser
        .eval(
            "const s = window.stampede; Object.assign(s.view, { lat: 40.75, lon: -73.98, zoom: 6 }); s.redraw(); return true",
            json!([]),
        )
        .await;
    browser
        .until(
            "the finer outline",
            "return window.stampede.outline().fine ? true : null",
            json!([]),
        )
        .await;
    // At street level the 1:50M coast would be kilometres off: plain land there, not sea.
    let street = browser
        .eval(
            "const s = window.stampede; Object.assign(s.view, { lat: 40.75, lon: -74.0, zoom: 13 }); s.redraw(); return s.pixelAt(40.7337, -74.0263)",
            json!([]),
        )
        .await;
    assert_eq!(street, json!([246, 243, 234, 255]), "plain land at zoom 13");
    app.stop().await;

    // Tiles that load, from a tile server of our own, credited without a link.
    let (tiles, seen) = serve_tiles().await;
    let app = TestApp::start("browser-map-tiles", |c| {
        c.web.tile_url = format!("http://{tiles}/t/{{z}}/{{x}}/{{y}}.svg");
        c.web.tile_attribution = "Tiles: ours".into();
        c.web.tile_attribution_url = String::new();
    })
    .await;
    browser.goto(&format!("http://{}/", app.addr)).await;
    browser
        .until(
            "a tile loaded",
            "return window.stampede.tiles().loaded > 0 ? true : null",
            json!([]),
        )
        .await;
    // The tile holding Wild Rydes HQ at the map's first zoom, 13 (Web Mercator tile numbers).
    let (lat, lon, z) = (40.749167_f64.to_radians(), -73.985184_f64, 13);
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n).floor();
    let y = ((1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor();
    let hq_tile = format!("/t/{z}/{x}/{y}.svg");
    // Tiles are asked for a few at a time: the first to load need not be HQ's.
    crate::support::poll::eventually("HQ's tile asked for", || {
        let asked = seen.lock().unwrap().contains(&hq_tile);
        async move { asked.then_some(()) }
    })
    .await;
    assert!(
        seen.lock().unwrap().contains(&hq_tile),
        "{hq_tile} among {:?}",
        seen.lock().unwrap()
    );
    let credit = browser
        .eval(
            "return [document.getElementById('attribution').textContent, document.querySelectorAll('#attribution a').length]",
            json!([]),
        )
        .await;
    assert_eq!(credit, json!(["Tiles: ours · Natural Earth", 1]));
    app.stop().await;
}

/// A record of `name` at a place, stamped now.
fn placed(name: &str, lat: f64, lon: f64) -> String {
    line(name, &now_text(0), 10.0, 150, 150)
        .replace("40.75", &lat.to_string())
        .replace("-73.98", &lon.to_string())
}

/// The dashboard subscribes to its view: it holds the unicorns the map shows and no others,
/// gets the others when the map moves to them, and where more are in view than the service
/// sends records of, it gets and draws counts per cell instead. The count in the header is the
/// whole fleet's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_gets_only_what_its_map_shows() {
    let app = TestApp::start("browser-view", |c| c.web.tile_url = String::new()).await;
    let addr = app.addr;
    let body = [
        placed("Shadowfax", 40.752, -73.985),
        placed("Bucephalus", 40.746, -73.99),
        placed("Londoner", 51.5, -0.12),
    ]
    .join("\n");
    let (status, _) = post_json(addr, "/ingest", body, None).await;
    assert!(status.is_success());

    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/")).await;
    let held = browser
        .until(
            "the two unicorns at HQ, live",
            "const u = window.stampede && window.stampede.unicorns().sort(); return document.getElementById('status').textContent === 'live' && u.length === 2 ? u : null",
            json!([]),
        )
        .await;
    assert_eq!(held, json!(["Bucephalus", "Shadowfax"]), "not the Londoner");
    // The header counts the whole fleet.
    browser
        .until(
            "the whole fleet's size in the header",
            "return document.getElementById('count').textContent === '3' ? true : null",
            json!([]),
        )
        .await;

    // The map moves to London: the page now holds the Londoner only.
    browser
        .eval(
            "Object.assign(window.stampede.view, { lat: 51.5, lon: -0.12, zoom: 12 }); window.stampede.redraw(); return true",
            json!([]),
        )
        .await;
    let held = browser
        .until(
            "the Londoner alone",
            "const u = window.stampede.unicorns(); return u.length === 1 && u[0] === 'Londoner' ? u : null",
            json!([]),
        )
        .await;
    assert_eq!(held, json!(["Londoner"]));

    // A crowd in London, more than the service sends records of: counts, drawn as clusters.
    let crowd: Vec<String> = (0..=stampede::hub::view::MAX_IN_VIEW)
        .map(|i| {
            placed(
                &format!("c{i}"),
                51.45 + (i % 100) as f64 * 0.001,
                -0.2 + (i / 100) as f64 * 0.002,
            )
        })
        .collect();
    let (status, reply) = post_json(addr, "/ingest", crowd.join("\n"), None).await;
    assert!(status.is_success(), "{reply}");
    let counted = browser
        .until(
            "counts for the crowded view",
            "const d = window.stampede.density(); return d && d.total > 5000 ? d.cells.reduce((a, c) => a + c[2], 0) : null",
            json!([]),
        )
        .await;
    assert_eq!(
        counted.as_u64(),
        Some(stampede::hub::view::MAX_IN_VIEW as u64 + 2),
        "the crowd and the Londoner, counted"
    );
    let drawn = browser
        .eval(
            "window.stampede.redraw(); return [window.stampede.unicorns().length, window.stampede.drawStats()]",
            json!([]),
        )
        .await;
    assert_eq!(drawn[0], 0, "no records held: {drawn}");
    assert_eq!(
        drawn[1]["clustered"].as_u64(),
        Some(stampede::hub::view::MAX_IN_VIEW as u64 + 2),
        "{drawn}"
    );

    // Back home, few in view: records again.
    browser
        .eval(
            "Object.assign(window.stampede.view, { lat: 40.749167, lon: -73.985184, zoom: 13 }); window.stampede.redraw(); return true",
            json!([]),
        )
        .await;
    browser
        .until(
            "the two at HQ again, as records",
            "const u = window.stampede.unicorns(); return u.length === 2 && !window.stampede.density() ? true : null",
            json!([]),
        )
        .await;
    app.stop().await;
}

/// The fleet table is the service's, not the page's: it lists the whole fleet a page at a
/// time (the map at HQ holds ten unicorns, the table pages through 250), searches and sorts
/// on the service, and a row of a unicorn off the map takes the map there and opens its popup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_table_pages_through_the_whole_fleet_on_the_service() {
    let app = TestApp::start("browser-table", |c| c.web.tile_url = String::new()).await;
    let addr = app.addr;
    // u1…u10 at HQ, u11…u250 in London; names in natural order are in number order.
    let body: Vec<String> = (1..=250)
        .map(|i| {
            let (lat, lon) = if i <= 10 {
                (40.749 + f64::from(i) * 0.0002, -73.985)
            } else {
                (
                    51.45 + f64::from(i % 50) * 0.002,
                    -0.2 + f64::from(i / 50) * 0.004,
                )
            };
            placed(&format!("u{i}"), lat, lon)
        })
        .collect();
    let (status, reply) = post_json(addr, "/ingest", body.join("\n"), None).await;
    assert!(status.is_success(), "{reply}");
    let names =
        |from: u32, to: u32| json!((from..=to).map(|i| format!("u{i}")).collect::<Vec<_>>());
    const ROWS: &str =
        "return [...document.querySelectorAll('#fleet tbody tr')].map(t => t.dataset.name)";
    let rows_and_info = format!(
        "const r = (() => {{ {ROWS} }})(); const info = document.getElementById('page-info').textContent; return r.length && info.includes(arguments[0]) ? {{rows: r, info}} : null"
    );

    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/")).await;
    let first = browser
        .until("the first page", &rows_and_info, json!(["of 250"]))
        .await;
    assert_eq!(first["rows"], names(1, 100));
    assert_eq!(first["info"], "1–100 of 250");
    let held = browser
        .eval("return window.stampede.unicorns().length", json!([]))
        .await;
    assert_eq!(held, 10, "the map holds only those in its view");

    // The last page.
    browser
        .eval(
            "document.getElementById('page-next').click(); return true",
            json!([]),
        )
        .await;
    browser
        .until("the second page", &rows_and_info, json!(["101–200"]))
        .await;
    browser
        .eval(
            "document.getElementById('page-next').click(); return true",
            json!([]),
        )
        .await;
    let last = browser
        .until("the last page", &rows_and_info, json!(["201–250"]))
        .await;
    assert_eq!(last["rows"], names(201, 250));
    let next_disabled = browser
        .eval(
            "return document.getElementById('page-next').disabled",
            json!([]),
        )
        .await;
    assert_eq!(next_disabled, true);

    // A search starts again from its first page; the count says how many match.
    browser
        .eval(
            "const f = document.getElementById('filter'); f.value = 'U24'; f.dispatchEvent(new Event('input')); return true",
            json!([]),
        )
        .await;
    let found = browser
        .until(
            "the search's page",
            &rows_and_info,
            json!(["of 11 matching"]),
        )
        .await;
    assert_eq!(
        found["rows"],
        json!([
            "u24", "u240", "u241", "u242", "u243", "u244", "u245", "u246", "u247", "u248", "u249"
        ])
    );

    // Sorted by name the other way round.
    browser
        .eval(
            "const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); document.querySelector('#fleet th[data-key=name]').click(); return true",
            json!([]),
        )
        .await;
    let reversed = browser
        .until(
            "names from the end",
            &format!("const r = (() => {{ {ROWS} }})(); return r[0] === 'u250' ? r : null"),
            json!([]),
        )
        .await;
    assert_eq!(reversed.as_array().unwrap().len(), 100);
    assert_eq!(reversed[99], "u151");

    // A row of a unicorn in London: the map goes there and its popup opens.
    browser
        .eval(
            "document.querySelector('#fleet tbody tr[data-name=u250]').click(); return true",
            json!([]),
        )
        .await;
    let popup = browser
        .until(
            "u250's popup, in London",
            "const p = document.getElementById('popup'); return !p.hidden && window.stampede.view.lat > 51 ? p.innerText : null",
            json!([]),
        )
        .await;
    assert!(popup.as_str().unwrap().contains("u250"), "{popup}");
    app.stop().await;
}

/// The Views panel: the example views are listed, a picked view's closed windows show in its
/// table and its chart (uPlot, served by the service) draws the busiest keys as lines, and
/// windows that close later arrive over the WebSocket and are drawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_views_panel_charts_a_view_and_takes_its_rows_live() {
    let views = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/views");
    let app = TestApp::start("browser-views", |c| {
        c.views.dir = views.display().to_string();
        // Event time alone closes windows.
        c.window.idle_timeout_secs = 3_600;
    })
    .await;
    let addr = app.addr;
    // Twelve unicorns, one record a second each, from `start` for `secs` seconds.
    let post = move |start: i64, secs: i64| async move {
        let t0 = 1_521_343_200_000i64; // 2018-03-18 03:20:00
        let mut body = Vec::new();
        for s in start..start + secs {
            for u in 0..12 {
                let t = chrono::DateTime::from_timestamp_millis(t0 + s * 1_000 + u * 10).unwrap();
                let time = t.format("%Y-%m-%d %H:%M:%S%.3f").to_string();
                body.push(line(
                    &format!("Unicorn-{u:02}"),
                    &time,
                    30.0 + u as f64,
                    150,
                    140,
                ));
            }
        }
        let (status, _) = post_json(addr, "/ingest", body.join("\n"), None).await;
        assert!(status.is_success());
    };
    post(0, 200).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/")).await;
    let listed = browser
        .until(
            "the views listed",
            "const o = [...document.querySelectorAll('#view-pick option')].map(o => o.value); return o.length ? o : null;",
            json!([]),
        )
        .await;
    assert_eq!(
        listed,
        json!(["fleet_5min", "rides", "summary", "weak_cells"])
    );
    browser
        .eval("document.getElementById('views').open = true; window.stampede.pickView('summary'); return 1", json!([]))
        .await;
    let shown = browser
        .until(
            "the summary view charted",
            "const v = window.stampede.views(); return v.name === 'summary' && v.rows > 0 && v.lines > 0 ? v : null;",
            json!([]),
        )
        .await;
    assert_eq!(
        shown["lines"], 8,
        "the busiest eight of twelve keys: {shown}"
    );
    assert!(shown["points"].as_u64().unwrap() >= 2, "{shown}");
    let canvas = browser
        .eval(
            "return !!document.querySelector('#view-chart canvas')",
            json!([]),
        )
        .await;
    assert_eq!(canvas, true, "uPlot drew the chart");
    let cells = browser
        .eval(
            "return document.querySelectorAll('#view-rows tbody tr').length",
            json!([]),
        )
        .await;
    assert!(cells.as_u64().unwrap() > 1, "{cells}");
    // Two more minutes: their windows close and reach the page over the WebSocket.
    post(200, 120).await;
    let live = browser
        .until(
            "rows of newly closed windows over the WebSocket, drawn",
            "const v = window.stampede.views(); return v.live > 0 && v.points > arguments[0] ? v : null;",
            json!([shown["points"]]),
        )
        .await;
    assert_eq!(live["lines"], 8, "{live}");
    app.stop().await;
}
