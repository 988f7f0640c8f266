// Stampede live dashboard: one WebSocket (/ws), a canvas map in Web Mercator, a fleet table and
// per-unicorn summaries. No framework, no build step. The only thing fetched from elsewhere is
// the map's raster tiles (web.tile_url, OpenStreetMap's by default; "" for none); beneath them,
// and wherever they do not load, the map draws the Natural Earth land outline the binary serves
// and a grid, so it is never blank offline.
"use strict";

const HQ = { lat: 40.749167, lon: -73.985184 };
const SILENT_MS = 30000;
const TRAIL_POINTS = 240;
const MPH = 2.23694;
const LOW_VITALS = 100;
const PAGE_ROWS = 100;

const fleet = new Map(); // name -> {record, seen (ms, browser clock), trail: [[lat, lon]], minute}
const summaries = new Map(); // name -> Map(StatusTime -> summary)
let selected = null;
let popupFor = null;
let popupWanted = null; // a unicorn picked in the table, off the map until its record comes
let sortKey = "name", sortAsc = true;
let tileUrl = "";
let dirtyMap = true, dirtyTable = true;
let received = 0, rate = 0;

// ---- map projection (Web Mercator, 256 px tiles) ----
const view = { lat: HQ.lat, lon: HQ.lon, zoom: 13 };
const canvas = document.getElementById("map");
const ctx = canvas.getContext("2d");

function worldPx(lat, lon, zoom) {
  const scale = 256 * Math.pow(2, zoom);
  const s = Math.sin(lat * Math.PI / 180);
  return {
    x: (lon + 180) / 360 * scale,
    y: (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * scale,
  };
}
function fromWorldPx(x, y, zoom) {
  const scale = 256 * Math.pow(2, zoom);
  const lon = x / scale * 360 - 180;
  const n = Math.PI - 2 * Math.PI * y / scale;
  return { lat: 180 / Math.PI * Math.atan(Math.sinh(n)), lon };
}
function toScreen(lat, lon) {
  const c = worldPx(view.lat, view.lon, view.zoom);
  const p = worldPx(lat, lon, view.zoom);
  return { x: p.x - c.x + canvas.clientWidth / 2, y: p.y - c.y + canvas.clientHeight / 2 };
}
function fromScreen(x, y) {
  const c = worldPx(view.lat, view.lon, view.zoom);
  return fromWorldPx(x - canvas.clientWidth / 2 + c.x, y - canvas.clientHeight / 2 + c.y, view.zoom);
}
function metresPerPixel() {
  return 156543.03392 * Math.cos(view.lat * Math.PI / 180) / Math.pow(2, view.zoom);
}

// ---- drawing ----
const tiles = new Map();
const tileStats = { loaded: 0, failed: 0 };
function tile(z, x, y) {
  const key = z + "/" + x + "/" + y;
  let img = tiles.get(key);
  if (!img) {
    img = new Image();
    img.onload = () => { tileStats.loaded++; dirtyMap = true; };
    // A tile that does not load leaves the outline and grid beneath it showing; it is not
    // asked for again until it leaves the cache.
    img.onerror = () => { tileStats.failed++; };
    img.src = tileUrl.replace("{z}", z).replace("{x}", x).replace("{y}", y);
    tiles.set(key, img);
    if (tiles.size > 500) tiles.delete(tiles.keys().next().value);
  }
  return img.complete && img.naturalWidth ? img : null;
}

// ---- the land outline (Natural Earth via npm world-atlas, served by the binary) ----
// Decoded once from TopoJSON into one Path2D in zoom-0 world pixels; drawn with a transform, so
// a frame costs one fill and one stroke. The 1:110M outline is fetched at once, the 1:50M one
// the first time the map is zoomed in past OUTLINE_DETAIL_ZOOM.
const OUTLINE_DETAIL_ZOOM = 4;
// Natural Earth's scales are for world-to-regional maps: closer in, its coast is kilometres off
// (a fleet would seem to swim in a river), so past this zoom the map is plain land and grid.
const OUTLINE_MAX_ZOOM = 9;
const outlines = { coarse: null, fine: null, fineAsked: false };
function topoPath(topo) {
  const [sx, sy] = topo.transform.scale, [tx, ty] = topo.transform.translate;
  const arcs = topo.arcs.map(arc => {
    let x = 0, y = 0;
    return arc.map(([dx, dy]) => {
      x += dx; y += dy;
      // Mercator has no poles: clamp to the latitudes a square world map shows.
      const p = worldPx(Math.max(-85.05, Math.min(85.05, y * sy + ty)), x * sx + tx, 0);
      return [p.x, p.y];
    });
  });
  // A ring that crosses the antimeridian jumps from one side of the map to the other: it is
  // unwrapped (continued past the edge), and the map draws the outline once more a world's
  // width to each side, so that both halves show.
  const path = new Path2D();
  for (const g of Object.values(topo.objects)[0].geometries) {
    const polygons = g.type === "Polygon" ? [g.arcs] : g.type === "MultiPolygon" ? g.arcs : [];
    for (const polygon of polygons) for (const ring of polygon) {
      let prev = null, shift = 0;
      for (const i of ring) {
        const arc = i < 0 ? arcs[~i].slice().reverse() : arcs[i];
        for (const [x0, y] of arc) {
          let x = x0 + shift;
          if (prev !== null && x - prev > 128) { shift -= 256; x -= 256; }
          else if (prev !== null && x - prev < -128) { shift += 256; x += 256; }
          if (prev === null) path.moveTo(x, y); else path.lineTo(x, y);
          prev = x;
        }
      }
      path.closePath();
    }
  }
  return path;
}
function loadOutline(which, url) {
  fetch(url).then(r => r.json()).then(topo => { outlines[which] = topoPath(topo); dirtyMap = true; })
    .catch(err => console.error("land outline", url, err));
}
function drawOutline(w, h) {
  if (view.zoom >= OUTLINE_DETAIL_ZOOM && !outlines.fineAsked) {
    outlines.fineAsked = true;
    loadOutline("fine", "/map/land-50m.json");
  }
  const path = view.zoom >= OUTLINE_DETAIL_ZOOM && outlines.fine ? outlines.fine : outlines.coarse;
  if (view.zoom > OUTLINE_MAX_ZOOM) { ctx.fillStyle = "#f6f3ea"; ctx.fillRect(0, 0, w, h); return; }
  ctx.fillStyle = "#dce8f3"; ctx.fillRect(0, 0, w, h);
  if (!path) return;
  const k = Math.pow(2, view.zoom);
  const c = worldPx(view.lat, view.lon, view.zoom);
  const dpr = window.devicePixelRatio || 1;
  ctx.save();
  ctx.fillStyle = "#f6f3ea"; ctx.strokeStyle = "#a9b8c9"; ctx.lineWidth = 1 / k;
  // (An unwrapped ring may lie a whole world to one side: every copy is drawn; the canvas
  // skips what falls outside it.)
  for (const copy of [-256, 0, 256]) {
    ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * (w / 2 - c.x + copy * k), dpr * (h / 2 - c.y));
    ctx.fill(path); ctx.stroke(path);
  }
  ctx.restore();
}

function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function drawGrid(w, h) {
  const tl = fromScreen(0, 0), br = fromScreen(w, h);
  const step = niceStep((tl.lat - br.lat) / 6);
  ctx.strokeStyle = "#d3dae6"; ctx.fillStyle = "#7a869a"; ctx.lineWidth = 1;
  ctx.font = "11px system-ui, sans-serif";
  const digits = Math.max(0, -Math.floor(Math.log10(step)));
  for (let lat = Math.floor(br.lat / step) * step; lat <= tl.lat; lat += step) {
    const y = toScreen(lat, view.lon).y;
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(lat.toFixed(digits) + "°", 4, y - 3);
  }
  for (let lon = Math.floor(tl.lon / step) * step; lon <= br.lon; lon += step) {
    const x = toScreen(view.lat, lon).x;
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
    ctx.fillText(lon.toFixed(digits) + "°", x + 3, h - 6);
  }
}

function drawTiles(w, h) {
  const z = Math.max(0, Math.min(19, Math.round(view.zoom)));
  const f = Math.pow(2, view.zoom - z);
  const c = worldPx(view.lat, view.lon, z);
  const x0 = Math.floor((c.x - w / 2 / f) / 256), x1 = Math.floor((c.x + w / 2 / f) / 256);
  const y0 = Math.floor((c.y - h / 2 / f) / 256), y1 = Math.floor((c.y + h / 2 / f) / 256);
  const n = Math.pow(2, z);
  for (let x = x0; x <= x1; x++) for (let y = Math.max(0, y0); y <= Math.min(n - 1, y1); y++) {
    const img = tile(z, ((x % n) + n) % n, y);
    if (img) ctx.drawImage(img, (x * 256 - c.x) * f + w / 2, (y * 256 - c.y) * f + h / 2, 256 * f + 1, 256 * f + 1);
  }
}

function drawScale(w, h) {
  const mpp = metresPerPixel();
  const metres = niceStep(mpp * 120);
  const px = metres / mpp;
  const x = w - px - 20, y = h - 28; // above the attribution
  ctx.strokeStyle = "#1d2433"; ctx.lineWidth = 2;
  ctx.beginPath(); ctx.moveTo(x, y - 5); ctx.lineTo(x, y); ctx.lineTo(x + px, y); ctx.lineTo(x + px, y - 5); ctx.stroke();
  ctx.fillStyle = "#1d2433"; ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(metres >= 1000 ? metres / 1000 + " km" : metres + " m", x, y - 8);
}

function colour(u) {
  const r = u.record;
  return Math.min(r.HealthPoints, r.MagicPoints) < LOW_VITALS ? "#c0392b" : "#2b6cb0";
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  sendView();
  drawOutline(w, h);
  drawGrid(w, h);
  if (tileUrl) drawTiles(w, h);
  drawScale(w, h);
  // HQ: the 50 m circle of the workshop's map, never smaller than 6 px.
  const hq = toScreen(HQ.lat, HQ.lon);
  ctx.beginPath(); ctx.arc(hq.x, hq.y, Math.max(6, 50 / metresPerPixel()), 0, 2 * Math.PI);
  ctx.fillStyle = "rgba(43,108,176,.2)"; ctx.fill(); ctx.strokeStyle = "#2b6cb0"; ctx.lineWidth = 2; ctx.stroke();
  drawFleet(w, h);
  if (popupFor) placePopup();
}

// ---- the fleet on the map, at any size ----
// One pass projects every unicorn (the view's centre computed once) and keeps those on screen;
// markers are then drawn in one path per style (not a path each), trails and labels only while
// few are in view, and past CLUSTER_ABOVE in view the map shows clusters: a circle per
// CLUSTER_PX cell with its count, red when one of them has low vitals or an alert firing.
const CLUSTER_ABOVE = 3000, CLUSTER_PX = 48, TRAILS_UP_TO = 500, LABELS_UP_TO = 60, CIRCLES_UP_TO = 400;
const drawStats = { inView: 0, clusters: 0, clustered: 0, ms: 0 };
function drawFleet(w, h) {
  const t0 = performance.now();
  const c = worldPx(view.lat, view.lon, view.zoom), k = 256 * Math.pow(2, view.zoom);
  const ox = w / 2 - c.x, oy = h / 2 - c.y;
  const xs = [], ys = [], us = [], names = [];
  for (const [name, u] of fleet) {
    const r = u.record;
    const s = Math.sin(r.Latitude * Math.PI / 180);
    const x = (r.Longitude + 180) / 360 * k + ox;
    const y = (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * k + oy;
    if (x < -20 || y < -20 || x > w + 20 || y > h + 20) continue;
    xs.push(x); ys.push(y); us.push(u); names.push(name);
  }
  const n = xs.length;
  drawStats.inView = n; drawStats.clusters = 0; drawStats.clustered = 0;
  if (density && !fleet.size) {
    drawDensity();
  } else if (n > CLUSTER_ABOVE) {
    drawClusters(xs, ys, us, names, w, h);
  } else {
    if (n <= TRAILS_UP_TO) {
      ctx.lineWidth = 2; ctx.strokeStyle = "rgba(230,126,34,.8)";
      ctx.beginPath();
      for (const u of us) {
        u.trail.forEach(([lat, lon], i) => { const p = toScreen(lat, lon); i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y); });
      }
      ctx.stroke();
    }
    if (trip && trip.points.length) drawTrip();
    // Halos of firing alerts, then markers by colour.
    ctx.beginPath();
    for (let i = 0; i < n; i++) if (firingNames.has(names[i])) { ctx.moveTo(xs[i] + 12, ys[i]); ctx.arc(xs[i], ys[i], 12, 0, 2 * Math.PI); }
    ctx.strokeStyle = "rgba(192,57,43,.85)"; ctx.lineWidth = 3; ctx.stroke();
    for (const col of ["#2b6cb0", "#c0392b"]) {
      ctx.fillStyle = col;
      if (n <= CIRCLES_UP_TO) {
        ctx.beginPath();
        for (let i = 0; i < n; i++) {
          if (colour(us[i]) !== col || names[i] === selected) continue;
          ctx.moveTo(xs[i] + 6, ys[i]); ctx.arc(xs[i], ys[i], 6, 0, 2 * Math.PI);
        }
        ctx.fill(); ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.stroke();
      } else {
        for (let i = 0; i < n; i++) if (colour(us[i]) === col) ctx.fillRect(xs[i] - 3, ys[i] - 3, 6, 6);
      }
    }
    if (n <= LABELS_UP_TO) {
      ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#1d2433";
      for (let i = 0; i < n; i++) ctx.fillText(names[i], xs[i] + 9, ys[i] + 4);
    }
  }
  // The selected unicorn, always on top and always itself.
  const su = selected && fleet.get(selected);
  if (su) {
    const p = toScreen(su.record.Latitude, su.record.Longitude);
    ctx.beginPath(); ctx.arc(p.x, p.y, 8, 0, 2 * Math.PI);
    ctx.fillStyle = colour(su); ctx.fill(); ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.stroke();
  }
  drawStats.ms = performance.now() - t0;
}
function drawClusters(xs, ys, us, names, w, h) {
  const cols = Math.ceil((w + 40) / CLUSTER_PX), rows = Math.ceil((h + 40) / CLUSTER_PX);
  const count = new Uint32Array(cols * rows), sx = new Float64Array(cols * rows), sy = new Float64Array(cols * rows);
  const alarm = new Uint8Array(cols * rows);
  for (let i = 0; i < xs.length; i++) {
    const cell = Math.floor((ys[i] + 20) / CLUSTER_PX) * cols + Math.floor((xs[i] + 20) / CLUSTER_PX);
    count[cell]++; sx[cell] += xs[i]; sy[cell] += ys[i];
    if (colour(us[i]) !== "#2b6cb0" || firingNames.has(names[i])) alarm[cell] = 1;
  }
  const circles = [];
  for (let cell = 0; cell < count.length; cell++) {
    if (count[cell]) circles.push({ x: sx[cell] / count[cell], y: sy[cell] / count[cell], n: count[cell], red: alarm[cell] });
  }
  drawCounts(circles);
}
// The server's counts per cell, when the view holds more unicorns than it sends records of.
function drawDensity() {
  drawCounts(density.cells.map(([lat, lon, n]) => ({ ...toScreen(lat, lon), n, red: 0 })));
}
// Circles sized by their count, with the count on them.
function drawCounts(circles) {
  ctx.font = "bold 11px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
  for (const red of [0, 1]) {
    ctx.beginPath();
    for (const c of circles) {
      if (c.red !== red) continue;
      const r = 8 + 3 * Math.log10(c.n);
      ctx.moveTo(c.x + r, c.y); ctx.arc(c.x, c.y, r, 0, 2 * Math.PI);
    }
    ctx.fillStyle = red ? "rgba(192,57,43,.85)" : "rgba(43,108,176,.85)"; ctx.fill();
  }
  ctx.fillStyle = "#fff";
  for (const { x, y, n } of circles) {
    drawStats.clusters++; drawStats.clustered += n;
    ctx.fillText(n >= 10000 ? Math.round(n / 1000) + "k" : n >= 1000 ? (n / 1000).toFixed(1) + "k" : String(n), x, y);
  }
  ctx.textAlign = "start"; ctx.textBaseline = "alphabetic";
}

// ---- popup ----
const popup = document.getElementById("popup");
function esc(s) { return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c])); }
function openPopup(name) { popupFor = name; renderPopup(); }
function renderPopup() {
  const u = fleet.get(popupFor);
  if (!u) { popup.hidden = true; popupFor = null; return; }
  const r = u.record;
  popup.innerHTML = '<button class="close" aria-label="Close">×</button><h3>' + esc(r.Name) + "</h3><table>" +
    '<tr><td>Speed</td><td class="speed">' + (r.Distance * MPH).toFixed(1) + " mph</td></tr>" +
    '<tr><td>Health</td><td class="health">' + r.HealthPoints + " points</td></tr>" +
    '<tr><td>Magic</td><td class="magic">' + r.MagicPoints + " points</td></tr></table>";
  popup.querySelector(".close").onclick = () => { popup.hidden = true; popupFor = null; };
  popup.hidden = false;
  placePopup();
}
function placePopup() {
  const u = fleet.get(popupFor);
  if (!u) return;
  const p = toScreen(u.record.Latitude, u.record.Longitude);
  popup.style.left = p.x + "px"; popup.style.top = p.y + "px";
}

// ---- interaction: drag to pan, wheel to zoom, click a marker ----
let drag = null;
canvas.addEventListener("mousedown", e => { drag = { x: e.clientX, y: e.clientY, moved: false }; });
window.addEventListener("mousemove", e => {
  if (!drag) return;
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
  if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add("dragging"); }
  if (!drag.moved) return;
  const c = worldPx(view.lat, view.lon, view.zoom);
  const n = fromWorldPx(c.x - dx, c.y - dy, view.zoom);
  view.lat = n.lat; view.lon = n.lon; drag.x = e.clientX; drag.y = e.clientY; dirtyMap = true;
});
window.addEventListener("mouseup", e => {
  if (drag && !drag.moved) clickAt(e);
  drag = null; canvas.classList.remove("dragging");
});
canvas.addEventListener("wheel", e => {
  e.preventDefault();
  const rect = canvas.getBoundingClientRect();
  const before = fromScreen(e.clientX - rect.left, e.clientY - rect.top);
  view.zoom = Math.max(2, Math.min(19, view.zoom - Math.sign(e.deltaY) * 0.25));
  const after = fromScreen(e.clientX - rect.left, e.clientY - rect.top);
  view.lat += before.lat - after.lat; view.lon += before.lon - after.lon; dirtyMap = true;
}, { passive: false });
function clickAt(e) {
  const rect = canvas.getBoundingClientRect();
  const x = e.clientX - rect.left, y = e.clientY - rect.top;
  let best = null, bestD = 12;
  for (const [name, u] of fleet) {
    const p = toScreen(u.record.Latitude, u.record.Longitude);
    const d = Math.hypot(p.x - x, p.y - y);
    if (d < bestD) { best = name; bestD = d; }
  }
  if (best) { openPopup(best); select(best); } else { popup.hidden = true; popupFor = null; }
}
document.getElementById("home").onclick = () => { view.lat = HQ.lat; view.lon = HQ.lon; view.zoom = 13; dirtyMap = true; };
document.getElementById("fit").onclick = fitFleet;
function fitFleet() {
  if (!fleet.size && !fleetBounds) return;
  // The whole fleet's extent as the service last said (the page holds only what is in view).
  let [s, wv, n, e] = fleetBounds || [90, 180, -90, -180];
  for (const u of fleet.values()) {
    s = Math.min(s, u.record.Latitude); n = Math.max(n, u.record.Latitude);
    wv = Math.min(wv, u.record.Longitude); e = Math.max(e, u.record.Longitude);
  }
  s = Math.min(s, HQ.lat); n = Math.max(n, HQ.lat); wv = Math.min(wv, HQ.lon); e = Math.max(e, HQ.lon);
  view.lat = (s + n) / 2; view.lon = (wv + e) / 2;
  for (view.zoom = 18; view.zoom > 2; view.zoom -= 0.25) {
    const a = toScreen(n, wv), b = toScreen(s, e);
    if (a.x > 30 && a.y > 30 && b.x < canvas.clientWidth - 30 && b.y < canvas.clientHeight - 30) break;
  }
  dirtyMap = true;
}

// ---- fleet table ----
// Paged, sorted and searched by the service (GET /api/unicorns?q=&sort=&order=&offset=&limit=),
// which holds the whole fleet: the page holds only what its map shows, and a table of a million
// rows would not fit in it anyway. A page is asked for again every second (less often when the
// answer is slow), and shows the fresher record of a unicorn the map holds.
const tbody = document.querySelector("#fleet tbody");
const filter = document.getElementById("filter");
const table = { rows: [], total: null, offset: 0, error: "" };
let tableTimer = 0, tableAsked = 0, filterTimer = 0;
filter.addEventListener("input", () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => { table.offset = 0; loadTable(); }, 200);
});
document.querySelectorAll("#fleet th").forEach(th => th.addEventListener("click", () => {
  const k = th.dataset.key;
  sortAsc = sortKey === k ? !sortAsc : k === "name";
  sortKey = k; table.offset = 0; loadTable();
}));
document.getElementById("page-prev").onclick = () => { table.offset = Math.max(0, table.offset - PAGE_ROWS); loadTable(); };
document.getElementById("page-next").onclick = () => { table.offset += PAGE_ROWS; loadTable(); };
// Asks for the page now; the answer to an older question is dropped.
function loadTable() {
  clearTimeout(tableTimer);
  const asked = ++tableAsked, t0 = performance.now();
  const q = "?q=" + encodeURIComponent(filter.value.trim()) + "&sort=" + sortKey + "&order=" + (sortAsc ? "asc" : "desc") +
    "&offset=" + table.offset + "&limit=" + PAGE_ROWS;
  const again = () => { if (asked === tableAsked) tableTimer = setTimeout(loadTable, Math.max(1000, 4 * (performance.now() - t0))); };
  api("/api/unicorns" + q).then(r => {
    // Busy (many tables of a big fleet at once): keep this page, ask again shortly.
    if (r.status === 503) return null;
    if (!r.ok) return r.json().then(b => { throw new Error(b.error || r.statusText); }, () => { throw new Error(r.statusText); });
    return r.json().then(rows => ({ rows, total: +r.headers.get("X-Total-Count") }));
  }).then(answer => {
    if (asked !== tableAsked) return;
    if (answer === null) { again(); return; }
    const { rows, total } = answer;
    // Past the end (the fleet shrank, or the search narrowed it): the last page instead.
    if (!rows.length && total > 0 && table.offset > 0) { table.offset = Math.floor((total - 1) / PAGE_ROWS) * PAGE_ROWS; loadTable(); return; }
    table.rows = rows; table.total = total; table.error = "";
    renderTable(); again();
  }).catch(e => {
    if (asked !== tableAsked) return;
    table.error = "The fleet table could not be loaded: " + e.message;
    renderTable(); again();
  });
}
function rowOf(r) {
  const u = fleet.get(r.Name);
  if (u) return { name: r.Name, record: u.record, seen: u.seen, minute: u.minute !== undefined ? u.minute : r.MinuteDistance };
  const seen = Date.parse(String(r.LastSeen).replace(" ", "T") + "Z");
  return { name: r.Name, record: r, seen: isNaN(seen) ? Date.now() : seen, minute: r.MinuteDistance };
}
// Names in natural order ("u2" before "u10"), as the service sorts them.
const byName = new Intl.Collator(undefined, { numeric: true });
function renderTable() {
  document.querySelectorAll("#fleet th").forEach(th => {
    th.classList.toggle("sorted", th.dataset.key === sortKey);
    th.classList.toggle("asc", th.dataset.key === sortKey && sortAsc);
  });
  const now = Date.now();
  tbody.innerHTML = table.rows.map(rowOf).map(({ name, record: r, seen, minute }) => {
    const ago = Math.max(0, Math.round((now - seen) / 1000));
    const cls = [name === selected ? "selected" : "", firingNames.has(name) ? "alerting" : ""].filter(Boolean).join(" ");
    return '<tr data-name="' + esc(name) + '"' + (cls ? ' class="' + cls + '"' : "") + "><td>" + esc(name) +
      "</td><td>" + ago + " s ago</td><td" + (r.HealthPoints < LOW_VITALS ? ' class="low"' : "") + ">" + r.HealthPoints +
      "</td><td" + (r.MagicPoints < LOW_VITALS ? ' class="low"' : "") + ">" + r.MagicPoints +
      "</td><td>" + (r.Distance * MPH).toFixed(1) + "</td><td>" + (minute === undefined ? "–" : minute.toFixed(0)) + "</td></tr>";
  }).join("");
  const info = document.getElementById("page-info");
  const n = table.total || 0, fmt = v => v.toLocaleString("en-US");
  info.textContent = table.error || (table.total === null ? "loading…" : n === 0
    ? (filter.value.trim() ? "no name contains “" + filter.value.trim() + "”" : "no unicorns yet")
    : fmt(table.offset + 1) + "–" + fmt(table.offset + table.rows.length) + " of " + fmt(n) + (filter.value.trim() ? " matching" : ""));
  document.getElementById("page-prev").disabled = table.offset === 0;
  document.getElementById("page-next").disabled = table.offset + table.rows.length >= n;
  document.getElementById("count").textContent = fleetTotal === null ? (table.total === null ? fleet.size : table.total) : fleetTotal;
}
tbody.addEventListener("click", e => {
  const tr = e.target.closest("tr");
  if (!tr || !tr.dataset.name) return;
  const name = tr.dataset.name;
  select(name);
  if (fleet.has(name)) { openPopup(name); return; }
  // Not on the map's view: go there; its popup opens when its record arrives.
  const row = table.rows.find(r => r.Name === name);
  if (row) {
    view.lat = row.Latitude; view.lon = row.Longitude; view.zoom = Math.max(view.zoom, 15);
    popupWanted = name; dirtyMap = true; sendView();
  }
});

// ---- a trip from the archive (GET /api/trip) ----
// {name, points: [[longitude, latitude, "StatusTime"], …]} of the last trip shown, or null.
let trip = null;
const tripStatus = document.getElementById("trip-status");
// A datetime-local input's value for `d` in this browser's time zone.
function localInput(d) { return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19); }
function drawTrip() {
  ctx.save();
  ctx.lineWidth = 3; ctx.strokeStyle = "rgba(43,108,176,.9)"; ctx.setLineDash([8, 4]);
  ctx.beginPath();
  trip.points.forEach(([lon, lat], i) => { const p = toScreen(lat, lon); i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y); });
  ctx.stroke(); ctx.setLineDash([]);
  const [first, last] = [trip.points[0], trip.points[trip.points.length - 1]];
  const a = toScreen(first[1], first[0]), b = toScreen(last[1], last[0]);
  ctx.fillStyle = "#1f9d55"; ctx.beginPath(); ctx.arc(a.x, a.y, 6, 0, 2 * Math.PI); ctx.fill();
  ctx.fillStyle = "#2b6cb0"; ctx.fillRect(b.x - 5, b.y - 5, 10, 10);
  ctx.restore();
}
function fitTrip() {
  let s = 90, n = -90, wv = 180, e = -180;
  for (const [lon, lat] of trip.points) { s = Math.min(s, lat); n = Math.max(n, lat); wv = Math.min(wv, lon); e = Math.max(e, lon); }
  view.lat = (s + n) / 2; view.lon = (wv + e) / 2;
  for (view.zoom = 18; view.zoom > 2; view.zoom -= 0.25) {
    const p = toScreen(n, wv), q = toScreen(s, e);
    if (p.x > 30 && p.y > 30 && q.x < canvas.clientWidth - 30 && q.y < canvas.clientHeight - 30) break;
  }
}
function showTrip(ev) {
  if (ev) ev.preventDefault();
  if (!selected) return;
  const name = selected;
  let q = "name=" + encodeURIComponent(name);
  for (const [key, id] of [["from", "trip-from"], ["to", "trip-to"]]) {
    const v = document.getElementById(id).value;
    if (v) q += "&" + key + "=" + encodeURIComponent(new Date(v).toISOString());
  }
  tripStatus.textContent = "Loading " + name + "'s trip…";
  api("/api/trip?" + q).then(r => r.json().then(body => ({ ok: r.ok, body }))).then(({ ok, body }) => {
    if (!ok) { tripStatus.textContent = body.error || "The trip could not be loaded."; return; }
    trip = body;
    document.getElementById("trip-clear").hidden = false;
    const n = body.points.length;
    if (!n) {
      tripStatus.textContent = "No archived positions of " + name + " in that range (the newest minute may not be written yet).";
    } else {
      tripStatus.textContent = n + " positions, " + body.points[0][2].slice(0, 19) + " to " + body.points[n - 1][2].slice(0, 19) + " UTC" +
        (body.truncated ? " (the first " + n + " only: narrow the range)" : "") + ".";
      fitTrip();
    }
    dirtyMap = true;
  }).catch(() => { tripStatus.textContent = "The service could not be reached."; });
}
document.getElementById("trip").addEventListener("submit", showTrip);
document.getElementById("trip-clear").onclick = () => {
  trip = null; tripStatus.textContent = ""; document.getElementById("trip-clear").hidden = true; dirtyMap = true;
};

// ---- per-unicorn summaries ----
function select(name) {
  if (name !== selected) {
    // A new unicorn: its trip range defaults to the last hour.
    const now = new Date();
    document.getElementById("trip-from").value = localInput(new Date(now.getTime() - 3600000));
    document.getElementById("trip-to").value = localInput(now);
    if (trip && trip.name !== name) tripStatus.textContent = "";
  }
  selected = name; dirtyTable = true; dirtyMap = true;
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-name").textContent = name;
  api("/api/summaries?limit=60&name=" + encodeURIComponent(name))
    .then(r => r.ok ? r.json() : [])
    .then(list => { list.forEach(addSummary); renderDetail(); })
    .catch(() => {});
  renderDetail();
}
function addSummary(s) {
  let m = summaries.get(s.Name);
  if (!m) { m = new Map(); summaries.set(s.Name, m); }
  const old = m.get(s.StatusTime);
  if (!old || s.Revision >= old.Revision) m.set(s.StatusTime, s);
  while (m.size > 120) m.delete([...m.keys()].sort()[0]);
  const u = fleet.get(s.Name);
  if (u) {
    const latest = [...m.keys()].sort().pop();
    u.minute = m.get(latest).Distance;
  }
}
function renderDetail() {
  if (!selected) return;
  const list = [...(summaries.get(selected) || new Map()).values()].sort((a, b) => a.StatusTime < b.StatusTime ? -1 : 1).slice(-30);
  document.querySelector("#minutes tbody").innerHTML = list.slice().reverse().map(s =>
    "<tr><td>" + esc(s.StatusTime.slice(11, 16)) + "</td><td>" + s.Distance.toFixed(0) + "</td><td>" + s.MinHealthPoints + "–" +
    s.MaxHealthPoints + "</td><td>" + s.MinMagicPoints + "–" + s.MaxMagicPoints + "</td><td>" + s.Revision + "</td></tr>").join("");
  const c = document.getElementById("chart"), g = c.getContext("2d");
  // Draw at the size it is shown (crisp text, no stretching).
  const dpr = window.devicePixelRatio || 1;
  const W = c.clientWidth || 380, H = c.clientHeight || 180, pad = 24;
  if (c.width !== Math.round(W * dpr)) { c.width = Math.round(W * dpr); c.height = Math.round(H * dpr); }
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  if (!list.length) { g.fillStyle = "#7a869a"; g.fillText("No summaries yet: the first arrives after a minute.", 10, H / 2); return; }
  const x = i => pad + (W - 2 * pad) * (list.length === 1 ? 0.5 : i / (list.length - 1));
  const maxD = Math.max(...list.map(s => s.Distance), 1);
  const vit = list.flatMap(s => [s.MinHealthPoints, s.MaxHealthPoints, s.MinMagicPoints, s.MaxMagicPoints]);
  const lo = Math.min(...vit), hi = Math.max(...vit, lo + 1);
  const yv = v => H - pad - (H - 2 * pad) * (v - lo) / (hi - lo);
  g.fillStyle = "rgba(43,108,176,.35)";
  list.forEach((s, i) => { const h = (H - 2 * pad) * s.Distance / maxD; g.fillRect(x(i) - 4, H - pad - h, 8, h); });
  for (const [minK, maxK, col] of [["MinHealthPoints", "MaxHealthPoints", "#1f9d55"], ["MinMagicPoints", "MaxMagicPoints", "#8e44ad"]]) {
    g.strokeStyle = col; g.lineWidth = 2;
    list.forEach((s, i) => { g.beginPath(); g.moveTo(x(i), yv(s[minK])); g.lineTo(x(i), yv(s[maxK])); g.stroke(); });
  }
  g.fillStyle = "#7a869a"; g.font = "10px system-ui"; g.fillText(hi + " pts", 2, pad - 6); g.fillText(lo + " pts", 2, H - 6);
  g.fillText(maxD.toFixed(0) + " m", W - pad - 30, pad - 6);
}

// ---- alerts ----
// Firing alerts by AlertId's rule and name; the unicorns they concern; the latest changes.
const firing = new Map();
const firingNames = new Map();
const recentChanges = [];
const MAX_CHANGES = 50;
function alertKey(a) { return a.Rule + "/" + a.Name; }
function setFiring(list) {
  firing.clear();
  list.forEach(a => firing.set(alertKey(a), a));
  countFiring();
}
function countFiring() {
  firingNames.clear();
  for (const a of firing.values()) firingNames.set(a.Name, (firingNames.get(a.Name) || 0) + 1);
}
function takeAlert(a) {
  if (a.State === "firing") firing.set(alertKey(a), a); else firing.delete(alertKey(a));
  countFiring();
  if (!recentChanges.some(c => c.AlertId === a.AlertId)) {
    recentChanges.unshift(a);
    if (recentChanges.length > MAX_CHANGES) recentChanges.pop();
  }
  dirtyAlerts = true;
}
function describeAlert(a) {
  const side = a.State === "firing" ? (a.Value < a.Threshold ? " < " : " > ") : " back at ";
  return a.Name + ": " + a.Rule + " (" + a.Field + " " + a.Value + (a.State === "firing" ? side + a.Threshold : "") + ")";
}
let dirtyAlerts = true;
function renderAlerts() {
  const list = [...firing.values()].sort((x, y) => byName.compare(x.Name, y.Name) || x.Rule.localeCompare(y.Rule));
  const badge = document.getElementById("alert-count");
  badge.textContent = list.length + " firing";
  badge.classList.toggle("firing", list.length > 0);
  document.getElementById("firing").innerHTML = list.length
    ? list.map(a => '<li data-alert-id="' + esc(a.AlertId) + '" data-name="' + esc(a.Name) + '" title="since ' + esc(a.StatusTime) + '">' + esc(describeAlert(a)) + "</li>").join("")
    : '<li class="none">Nothing firing.</li>';
  document.getElementById("changes").innerHTML = recentChanges.length
    ? recentChanges.map(a => '<li class="' + a.State + '" data-alert-id="' + esc(a.AlertId) + '" data-name="' + esc(a.Name) + '">' + esc(a.StatusTime.slice(11, 19)) + " " + esc(a.State) + " — " + esc(describeAlert(a)) + "</li>").join("")
    : '<li class="none">No changes yet.</li>';
}
// The changes before this page was opened (the live feed brings the later ones).
function loadRecentAlerts() {
  api("/api/alerts?state=all&limit=" + MAX_CHANGES)
    .then(r => r.ok ? r.json() : [])
    .then(list => {
      for (const a of list) {
        if (!recentChanges.some(c => c.AlertId === a.AlertId)) recentChanges.push(a);
      }
      recentChanges.sort((x, y) => x.StatusTime < y.StatusTime ? 1 : x.StatusTime > y.StatusTime ? -1 : 0);
      recentChanges.length = Math.min(recentChanges.length, MAX_CHANGES);
      dirtyAlerts = true;
    })
    .catch(() => {});
}
document.getElementById("alerts").addEventListener("click", e => {
  const li = e.target.closest("li[data-name]");
  if (li) { select(li.dataset.name); openPopup(li.dataset.name); }
});

// ---- the live feed ----
function upsert(r) {
  const now = Date.now();
  let u = fleet.get(r.Name);
  if (!u) { u = { record: r, seen: now, trail: [[HQ.lat, HQ.lon]] }; fleet.set(r.Name, u); }
  u.record = r; u.seen = now;
  const last = u.trail[u.trail.length - 1];
  if (last[0] !== r.Latitude || last[1] !== r.Longitude) u.trail.push([r.Latitude, r.Longitude]);
  // A big fleet keeps short trails (they are drawn only while few unicorns are in view), so
  // that the page's memory stays bounded by the fleet, not by the fleet times its history.
  const keep = fleet.size > 10000 ? 1 : fleet.size > 2000 ? 16 : TRAIL_POINTS;
  while (u.trail.length > keep) u.trail.shift();
}
function remove(name) {
  fleet.delete(name);
  if (popupFor === name) { popup.hidden = true; popupFor = null; }
}
function handle(msg) {
  switch (msg.type) {
    case "density":
      answered = msg.area || null;
      density = msg; fleetTotal = msg.total; fleetBounds = msg.bounds || fleetBounds;
      fleet.clear();
      break;
    case "snapshot": {
      if (msg.view) {
        answered = msg.area || null;
        density = null; fleetTotal = msg.total; fleetBounds = msg.bounds || null;
        // The first view is empty but the fleet is not: show where it is.
        if (!fittedOnce && !msg.unicorns.length && msg.total > 0 && fleetBounds) { fittedOnce = true; setTimeout(fitFleet, 0); }
        if (msg.unicorns.length) fittedOnce = true;
      }
      const keep = new Map(fleet);
      fleet.clear();
      for (const r of msg.unicorns) {
        const old = keep.get(r.Name);
        if (old) fleet.set(r.Name, old);
        upsert(r);
      }
      msg.summaries.forEach(addSummary);
      setFiring(msg.alerts || []);
      dirtyAlerts = true;
      break;
    }
    case "alert": takeAlert(msg.alert); break;
    case "telemetry": msg.records.forEach(upsert); received += msg.records.length; break;
    case "summary": addSummary(msg.summary); if (msg.summary.Name === selected) renderDetail(); break;
    case "silent": remove(msg.name); table.rows = table.rows.filter(r => r.Name !== msg.name); break;
    case "view": if (msg.view === viewsPanel.name) { msg.rows.forEach(r => takeViewRow(r, true)); dirtyView = true; } return;
  }
  dirtyMap = true; dirtyTable = true;
  if (popupWanted && fleet.has(popupWanted)) { openPopup(popupWanted); popupWanted = null; }
  if (popupFor && fleet.has(popupFor)) renderPopup();
}

// ---- continuous views (CONTRACT §9): pick one, its latest windows live, a chart over time ----
// The service lists the views (GET /api/views, with which columns place a row: its keys), the
// page reads a view's newest rows (GET /api/views/NAME) and asks the WebSocket for its rows as
// windows close or restate ({"type":"views"}). The chart draws a numeric column per window,
// one line per key (the busiest eight), with uPlot (vendored, served by the service).
const VIEW_ROWS = 5000, VIEW_LINES = 8, VIEW_TABLE = 12;
const viewsPanel = { list: [], name: "", keys: [], column: "", rows: new Map(), plot: null, lines: "" };
let dirtyView = false;
const viewPick = document.getElementById("view-pick");
const viewColumn = document.getElementById("view-column");
function utcSeconds(t) { return Date.parse(String(t).replace(" ", "T") + "Z") / 1000; }
function viewRowKey(r) { return viewsPanel.keys.map(k => r[k]).join("\u0001"); }
function viewLineKey(r) {
  return viewsPanel.keys.filter(k => k !== "window_start" && k !== "window_end").map(k => r[k]).join(" · ") || viewsPanel.name;
}
function takeViewRow(r, fresh) {
  const key = viewRowKey(r);
  const old = viewsPanel.rows.get(key);
  if (old && old.revision > r.revision) return;
  r._fresh = fresh ? Date.now() : 0;
  viewsPanel.rows.set(key, r);
  if (viewsPanel.rows.size > VIEW_ROWS) {
    // The oldest windows go first.
    const oldest = [...viewsPanel.rows.entries()].sort((a, b) => String(a[1].window_start).localeCompare(String(b[1].window_start)));
    for (const [k] of oldest.slice(0, viewsPanel.rows.size - VIEW_ROWS)) viewsPanel.rows.delete(k);
  }
}
function loadViews() {
  api("/api/views").then(r => r.ok ? r.json() : []).then(list => {
    viewsPanel.list = Array.isArray(list) ? list : [];
    document.getElementById("views").hidden = !viewsPanel.list.length;
    viewPick.replaceChildren(...viewsPanel.list.map(v => new Option(v.name, v.name)));
    const keep = viewsPanel.list.some(v => v.name === viewsPanel.name) ? viewsPanel.name : (viewsPanel.list[0] || {}).name;
    if (keep) { viewPick.value = keep; pickView(keep); }
  }).catch(() => {});
}
function pickView(name) {
  const v = viewsPanel.list.find(v => v.name === name);
  if (!v) return;
  viewsPanel.name = name; viewsPanel.keys = v.keys || []; viewsPanel.rows.clear();
  const state = document.getElementById("view-state");
  state.textContent = v.state; state.className = "badge" + (v.state === "failed" ? " firing" : "");
  state.title = v.error || "";
  const numeric = v.columns.filter(c => /Int|Float|Decimal/.test(c.type) && c.name !== "revision" && !viewsPanel.keys.includes(c.name));
  viewColumn.replaceChildren(...numeric.map(c => new Option(c.name, c.name)));
  viewsPanel.column = numeric.length ? numeric[0].name : "";
  viewColumn.value = viewsPanel.column;
  subscribeViews();
  api("/api/views/" + encodeURIComponent(name) + "?limit=" + VIEW_ROWS).then(r => r.ok ? r.json() : []).then(rows => {
    if (viewsPanel.name !== name) return;
    rows.forEach(r => takeViewRow(r, false));
    dirtyView = true;
  }).catch(() => {});
  dirtyView = true;
}
function subscribeViews() {
  if (socket && socket.readyState === WebSocket.OPEN && viewsPanel.name) {
    socket.send(JSON.stringify({ type: "views", views: [viewsPanel.name] }));
  }
}
viewPick.addEventListener("change", () => pickView(viewPick.value));
viewColumn.addEventListener("change", () => { viewsPanel.column = viewColumn.value; viewsPanel.lines = ""; dirtyView = true; });
function renderView() {
  if (!viewsPanel.name || document.getElementById("views").hidden) return;
  const rows = [...viewsPanel.rows.values()].sort((a, b) =>
    String(b.window_start).localeCompare(String(a.window_start)) || viewLineKey(a).localeCompare(viewLineKey(b)));
  // The latest windows, as a table.
  const v = viewsPanel.list.find(v => v.name === viewsPanel.name);
  const columns = v ? v.columns.map(c => c.name) : Object.keys(rows[0] || {}).filter(k => k !== "_fresh");
  const head = document.querySelector("#view-rows thead");
  head.innerHTML = "<tr>" + columns.map(c => `<th class="${viewsPanel.keys.includes(c) ? "key" : ""}">${esc(c)}</th>`).join("") + "</tr>";
  const now = Date.now();
  document.querySelector("#view-rows tbody").innerHTML = rows.slice(0, VIEW_TABLE).map(r =>
    `<tr class="${now - r._fresh < 3000 ? "fresh" : ""}">` + columns.map(c => {
      const x = r[c];
      const text = typeof x === "number" && !Number.isInteger(x) ? x.toFixed(2) : x === null || x === undefined ? "" : String(x);
      return `<td class="${viewsPanel.keys.includes(c) ? "key" : ""}">${esc(text)}</td>`;
    }).join("") + "</tr>").join("") || `<tr><td class="key">No window has closed yet.</td></tr>`;
  // The chart: the chosen column per window, the busiest keys as lines.
  const col = viewsPanel.column, box = document.getElementById("view-chart");
  if (!col || typeof uPlot === "undefined") { box.replaceChildren(); viewsPanel.plot = null; return; }
  const totals = new Map();
  for (const r of rows) totals.set(viewLineKey(r), (totals.get(viewLineKey(r)) || 0) + Math.abs(Number(r[col]) || 0));
  const lines = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, VIEW_LINES).map(e => e[0]);
  const xs = [...new Set(rows.map(r => utcSeconds(r.window_start)))].filter(Number.isFinite).sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = lines.map(() => new Array(xs.length).fill(null));
  for (const r of rows) {
    const li = lines.indexOf(viewLineKey(r)), xi = at.get(utcSeconds(r.window_start));
    if (li >= 0 && xi !== undefined && typeof r[col] === "number") ys[li][xi] = r[col];
  }
  const data = [xs, ...ys];
  const shape = col + "|" + lines.join("|");
  if (viewsPanel.plot && viewsPanel.lines === shape) { viewsPanel.plot.setData(data); return; }
  if (viewsPanel.plot) viewsPanel.plot.destroy();
  const palette = ["#2b6cb0", "#c0392b", "#1f9d55", "#8e44ad", "#c97a00", "#16a085", "#d35400", "#34495e"];
  viewsPanel.plot = new uPlot({
    width: Math.max(200, box.clientWidth || 440), height: 150,
    // Windows are in UTC, as the rows say them.
    tzDate: ts => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    series: [{}, ...lines.map((l, i) => ({ label: l, stroke: palette[i % palette.length], width: 1.5, spanGaps: false }))],
    axes: [{}, { label: col, size: 60 }],
    legend: { show: lines.length > 1 },
  }, data, box);
  viewsPanel.lines = shape;
}

// ---- the read token (web.read_token), asked for once and kept for the tab ----
const TOKEN_KEY = "stampede.readToken";
let token = sessionStorage.getItem(TOKEN_KEY) || "";
function api(path) {
  return fetch(path, { headers: token ? { Authorization: "Bearer " + token } : {} });
}
function hex(text) {
  return [...new TextEncoder().encode(text)].map(b => b.toString(16).padStart(2, "0")).join("");
}
// Resolves once the service lets this tab read (asking for the token while it does not).
function signIn(message) {
  const dialog = document.getElementById("signin");
  const input = document.getElementById("signin-token");
  const error = document.getElementById("signin-error");
  error.hidden = !message; error.textContent = message || "";
  status.textContent = "signed out"; status.className = "reconnecting";
  return new Promise(resolve => {
    document.getElementById("signin-form").onsubmit = ev => {
      ev.preventDefault();
      token = input.value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      dialog.close();
      resolve(start());
    };
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}
function start() {
  return api("/api/config").then(r => {
    if (r.status === 401) {
      return signIn(token
        ? "The service refused that token. Check web.read_token in its config (tokens are case-sensitive), or ask whoever runs it."
        : "");
    }
    return r.json().then(c => {
      tileUrl = c.tile_url || "";
      showAttribution(tileUrl ? c.tile_attribution || "" : "", c.tile_attribution_url || "");
      dirtyMap = true; connect(); loadRecentAlerts(); loadTable(); loadViews();
    });
  }).catch(() => setTimeout(start, 2000));
}

// The credit the tiles' licence asks for, as text (a link when configured), and Natural Earth's.
function showAttribution(text, url) {
  const box = document.getElementById("attribution");
  box.replaceChildren();
  if (text) {
    const credit = document.createElement(/^https?:\/\//.test(url) ? "a" : "span");
    credit.textContent = text;
    if (credit.tagName === "A") { credit.href = url; credit.target = "_blank"; credit.rel = "noopener noreferrer"; }
    box.append(credit, " · ");
  }
  const ne = document.createElement("a");
  ne.textContent = "Natural Earth"; ne.href = "https://www.naturalearthdata.com/"; ne.target = "_blank"; ne.rel = "noopener noreferrer";
  box.append(ne);
}

// ---- the view subscription ----
// The page subscribes to what the map shows (/ws?view=S,W,N,E, then a viewport message when
// it moves): the service sends records of the unicorns in view only, and counts per cell
// ("density") while they are more than it sends records of, so the page costs the same with a
// thousand unicorns or a million.
let socket = null, viewSent = "", viewTimer = 0;
let density = null;            // the latest counts, while the view holds too many for records
let fleetTotal = null;         // the whole fleet's size, as the service last said
let fleetBounds = null;        // [south, west, north, east] of the whole fleet
let fittedOnce = false;
let answered = null;           // the view the latest snapshot or counts answer: [s, w, n, e]
function viewBounds() {
  const w = canvas.clientWidth, h = canvas.clientHeight;
  const tl = fromScreen(0, 0), br = fromScreen(w, h);
  let west = tl.lon, east = br.lon;
  if (east - west >= 360) { west = -180; east = 180; }
  else { west = ((west + 540) % 360) - 180; east = ((east + 540) % 360) - 180; }
  const lat = v => Math.max(-90, Math.min(90, v));
  return [lat(br.lat), west, lat(tl.lat), east].map(v => +v.toFixed(5));
}
// Says where the map is, 150 ms after it stops moving (and only if it moved).
function sendView() {
  clearTimeout(viewTimer);
  viewTimer = setTimeout(() => {
    const b = viewBounds(), key = b.join(",");
    if (!socket || socket.readyState !== WebSocket.OPEN || key === viewSent) return;
    viewSent = key;
    socket.send(JSON.stringify({ type: "viewport", south: b[0], west: b[1], north: b[2], east: b[3] }));
  }, 150);
}

const status = document.getElementById("status");
let backoff = 500;
function connect() {
  viewSent = viewBounds().join(",");
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws?view=" + viewSent;
  // A browser's WebSocket cannot send headers: the token rides in the subprotocol list.
  const ws = new WebSocket(url, token ? ["stampede", "stampede.token." + hex(token)] : ["stampede"]);
  socket = ws;
  let opened = false;
  ws.onopen = () => { opened = true; status.textContent = "live"; status.className = "live"; backoff = 500; sendView(); subscribeViews(); };
  ws.onmessage = e => { try { handle(JSON.parse(e.data)); } catch (err) { console.error("bad frame", err); } };
  ws.onclose = () => {
    status.textContent = "reconnecting…"; status.className = "reconnecting";
    // Refused before it opened: the token may have changed; start() asks again if so.
    setTimeout(opened ? connect : start, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}

// Silent unicorns disappear even if the server's word is lost.
setInterval(() => {
  const now = Date.now();
  for (const [name, u] of fleet) if (now - u.seen > SILENT_MS) { remove(name); dirtyMap = dirtyTable = true; }
  rate = received; received = 0; dirtyTable = true;
  document.getElementById("rate").textContent = rate;
}, 1000);
// The table and alerts refresh twice a second, or less often when sorting a big fleet takes
// long: never more than a fifth of the page's time.
(function refreshLists() {
  const t0 = performance.now();
  if (dirtyTable) { dirtyTable = false; renderTable(); }
  if (dirtyAlerts) { dirtyAlerts = false; renderAlerts(); }
  if (dirtyView) { dirtyView = false; renderView(); }
  setTimeout(refreshLists, Math.max(500, 4 * (performance.now() - t0)));
})();
function frame() { if (dirtyMap) { dirtyMap = false; draw(); } requestAnimationFrame(frame); }
window.addEventListener("resize", () => { dirtyMap = true; });

// For tests and curious users: the map's view of the fleet.
window.stampede = {
  unicorns: () => [...fleet.keys()],
  firing: () => [...firing.values()].map(a => a.AlertId),
  screenPosition: name => { const u = fleet.get(name); return u ? toScreen(u.record.Latitude, u.record.Longitude) : null; },
  trip: () => trip,
  view,
  tiles: () => ({ ...tileStats }),
  outline: () => ({ coarse: !!outlines.coarse, fine: !!outlines.fine }),
  // The colour of the map at a place, as [r, g, b, a] (what a user sees there).
  pixelAt: (lat, lon) => {
    const p = toScreen(lat, lon), dpr = window.devicePixelRatio || 1;
    return [...ctx.getImageData(Math.round(p.x * dpr), Math.round(p.y * dpr), 1, 1).data];
  },
  redraw: () => { draw(); },
  drawStats: () => ({ ...drawStats }),
  // Feeds a frame as if it came over the WebSocket (load measurements).
  take: msg => handle(msg),
  density: () => density,
  total: () => fleetTotal,
  // Whether what the page holds answers the view it last said (load measurements, tests).
  viewAnswered: () => !!answered && viewBounds().every((v, i) => Math.abs(v - answered[i]) < 1e-4),
  renderTable: () => renderTable(),
  // The Views panel: the view shown, its rows held, the chart's lines and points.
  views: () => ({
    name: viewsPanel.name,
    rows: viewsPanel.rows.size,
    lines: viewsPanel.plot ? viewsPanel.plot.series.length - 1 : 0,
    points: viewsPanel.plot ? viewsPanel.plot.data[0].length : 0,
    live: [...viewsPanel.rows.values()].filter(r => r._fresh).length,
  }),
  pickView: name => { viewPick.value = name; pickView(name); },
};

loadOutline("coarse", "/map/land-110m.json");
start();
requestAnimationFrame(frame);
