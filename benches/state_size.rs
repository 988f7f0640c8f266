//! Window state per active unicorn with 1,000,000 unicorns, measured with a counting allocator
//! (every heap byte the engine holds), not estimated. `cargo bench --bench state_size`.
//!
//! Two shapes: every unicorn with one open window, and the steady state of a live fleet, where
//! each unicorn also has last minute's window closed but kept for its allowed lateness; then
//! what is left once the whole fleet has fallen silent and been forgotten.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use stampede::record::Telemetry;
use stampede::window::{Engine, Forgotten, WindowConfig};
use stampede_producers::fleet_name;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the caller's own layout and
// pointer; the only addition is an atomic counter of live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const UNICORNS: usize = 1_000_000;
const T0: i64 = 1_521_343_200_000;

fn record(name: &str, t: i64) -> Telemetry<'_> {
    Telemetry {
        name: Cow::Borrowed(name),
        status_time: t,
        latitude: 40.7,
        longitude: -73.9,
        distance: 30.0,
        health_points: 150,
        magic_points: 150,
        input_data: None,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep it quick there.
    let names: Vec<String> = (0..UNICORNS).map(fleet_name).collect();
    let name_bytes: usize = names.iter().map(String::len).sum();
    let cfg = WindowConfig {
        idle_timeout_ms: None,
        ..WindowConfig::default()
    };

    let before = LIVE.load(Ordering::Relaxed);
    let mut engine = Engine::new(cfg);
    for (i, n) in names.iter().enumerate() {
        let _ = engine.push(&record(n, T0 + 10_000), i as u64, 0);
    }
    let one_window = LIVE.load(Ordering::Relaxed) - before;
    let (state, interner) = engine.heap_bytes();
    println!("1,000,000 unicorns, one open window each:");
    report(one_window, state, interner, name_bytes, engine.live_slots());

    // Steady state: minute 1 open, minute 0 closed but inside its allowed lateness.
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let _ = engine.push(&record(n, T0 + 66_000), (UNICORNS + i) as u64, 0);
    }
    engine.advance(0, &mut out);
    // A big minute closes in slices between batches; here, all of it at once.
    engine.finish_closing(&mut out);
    assert_eq!(out.len(), UNICORNS, "minute 0 closed");
    drop(out);
    let steady = LIVE.load(Ordering::Relaxed) - before;
    let (state, interner) = engine.heap_bytes();
    println!("1,000,000 unicorns, steady state (open window + closed window within lateness):");
    report(steady, state, interner, name_bytes, engine.live_slots());

    // The fleet falls silent: its windows become final, then its unicorns are forgotten.
    let mut out = Vec::new();
    engine.flush(&mut out);
    drop(out);
    let mut forgotten = Forgotten::default();
    engine.forget_silent(1, 1, |_| false, &mut forgotten);
    assert_eq!(forgotten.ids.len(), UNICORNS, "all forgotten");
    drop(forgotten);
    let after = LIVE.load(Ordering::Relaxed) - before;
    println!("after all 1,000,000 fell silent and were forgotten:");
    println!("  measured heap, all engine state:  {after} bytes in all");
}

fn report(measured: usize, state: usize, interner: usize, name_bytes: usize, slots: usize) {
    let per = |b: usize| b as f64 / UNICORNS as f64;
    println!(
        "  measured heap, all engine state:  {:>6.1} bytes/unicorn ({} slots)",
        per(measured),
        slots
    );
    println!(
        "    of which window state:          {:>6.1} bytes/unicorn",
        per(state)
    );
    println!(
        "    of which name table:            {:>6.1} bytes/unicorn ({:.1} of them the names' own bytes)",
        per(interner),
        per(name_bytes)
    );
}
