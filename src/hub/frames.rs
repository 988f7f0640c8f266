//! The JSON the hub writes into WebSocket frames: snapshots of the fleet (or of a view), with
//! each unicorn's record, summary and firing alerts, and the view and fleet bounds they answer.
//! Written once per frame into one string, shared by every client that gets it.

use super::*;

/// `"area":[south,west,north,east],`: the view a frame answers.
pub(super) fn write_area(out: &mut String, v: &View) {
    let _ = write!(
        out,
        "\"area\":[{},{},{},{}],",
        v.south, v.west, v.north, v.east
    );
}

/// `"bounds":[south,west,north,east],` of the fleet, when there is one.
pub(super) fn write_bounds(out: &mut String, grid: &Grid) {
    if let Some([s, w, n, e]) = grid.bounds() {
        let _ = write!(out, "\"bounds\":[{s:.5},{w:.5},{n:.5},{e:.5}],");
    }
}

/// Every unicorn, in natural order of names.
pub(super) fn sorted<'a>(fleet: &'a Fleet, names: &Names) -> Vec<&'a Unicorn> {
    names.iter().filter_map(|n| fleet.get(&n.0)).collect()
}

pub(super) fn snapshot(fleet: &Fleet, names: &Names, firing: &Firing) -> Frame {
    let unicorns = sorted(fleet, names);
    let mut out = String::with_capacity(64 + unicorns.len() * 500);
    out.push_str("{\"type\":\"snapshot\",\"unicorns\":[");
    write_unicorns(&mut out, &unicorns, firing);
    Frame::from(out)
}

/// The rest of a snapshot after `"unicorns":[`: their records, their summaries, every firing
/// alert.
pub(super) fn write_unicorns(out: &mut String, unicorns: &[&Unicorn], firing: &Firing) {
    for (i, u) in unicorns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        u.record.write_json(out, u.seen_ms);
    }
    out.push_str("],\"summaries\":[");
    let mut first = true;
    for s in unicorns.iter().filter_map(|u| u.summary.as_deref()) {
        if !first {
            out.push(',');
        }
        first = false;
        s.write_json(out);
    }
    out.push_str("],\"alerts\":[");
    let mut alerts: Vec<&Change> = firing.values().map(|(_, c)| c).collect();
    alerts.sort_by(|a, b| (&a.name, &a.rule).cmp(&(&b.name, &b.rule)));
    for (i, c) in alerts.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        c.write_json(out);
    }
    out.push_str("]}");
}
