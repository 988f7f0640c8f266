//! The hub's task: the live state of the fleet (records, summaries, firing alerts, the view
//! grid) and its clients' queues, changed only here, one input at a time; frames go out every
//! 100 ms, a sweep runs every second.

use super::*;

impl Unicorn {
    /// Its row of `GET /api/unicorns`: the record, `LastSeen`, and the distance of its latest
    /// summarised minute as `MinuteDistance` once there is one.
    fn write_row(&self, out: &mut String) {
        self.record.write_json(out, self.seen_ms);
        if let Some(s) = &self.summary {
            out.pop();
            out.push_str(",\"MinuteDistance\":");
            write_f64(out, s.distance);
            out.push('}');
        }
    }
}

struct State {
    fleet: Fleet,
    /// The fleet's names in natural order (the table's pages).
    names: Names,
    /// Summaries of unicorns the hub has no record of yet (an engine sends a batch's summaries
    /// at once and its records conflated, a moment later), this sweep's and the last's.
    early: [HashMap<String, Box<Summary>>; 2],
    /// Time spent on `GET /api/unicorns` since the last sweep.
    table_spent: Duration,
    table_budget: Duration,
    clients: Vec<Client>,
    queue: usize,
    queue_bytes: usize,
    silent_after: Duration,
    /// Summaries not taken in yet, and how far into each batch ([`State::take_summaries`]).
    summaries_due: std::collections::VecDeque<(Arc<[Summary]>, usize)>,
    /// Unicorns with a record not yet sent in a telemetry frame.
    pending: Vec<(LiveKey, Arc<str>)>,
    snapshot: Option<Frame>,
    /// Firing alerts by (rule, unicorn), with the partition that owns them.
    firing: Firing,
    /// The latest changes, oldest first, at most [`RECENT_ALERTS`].
    recent: std::collections::VecDeque<Change>,
    /// Where every unicorn is, by cell (views).
    grid: Grid,
    next_id: u64,
}

pub(super) async fn run(
    mut rx: mpsc::Receiver<HubInput>,
    settings: HubSettings,
    stop: CancellationToken,
) {
    let mut state = State {
        fleet: Fleet::default(),
        names: Names::new(),
        early: [HashMap::new(), HashMap::new()],
        table_spent: Duration::ZERO,
        table_budget: settings.table_budget,
        clients: Vec::new(),
        queue: settings.queue_frames.max(1),
        queue_bytes: settings.queue_bytes,
        silent_after: settings.silent_after,
        summaries_due: std::collections::VecDeque::new(),
        pending: Vec::new(),
        snapshot: None,
        firing: HashMap::new(),
        recent: std::collections::VecDeque::new(),
        grid: Grid::default(),
        next_id: 0,
    };
    // A telemetry frame goes out as soon as there is news, but at most once per FRAME_EVERY.
    let mut last_frame = Instant::now()
        .checked_sub(FRAME_EVERY)
        .unwrap_or_else(Instant::now);
    let mut sweep = interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            input = rx.recv() => {
                let Some(input) = input else { break };
                METRICS.queue_hub.store(rx.len() as i64, Ordering::Relaxed);
                state.take(input);
            }
            () = tokio::time::sleep_until(last_frame + FRAME_EVERY), if !state.pending.is_empty() => {
                state.flush();
                last_frame = Instant::now();
            }
            // A yield, not an always-ready future: on the hub's own current-thread runtime the
            // timers (frames, sweep) only fire when the task gives the runtime a turn.
            () = tokio::task::yield_now(), if !state.summaries_due.is_empty() => {
                state.take_summaries(SUMMARIES_AT_ONCE);
            }
            _ = sweep.tick() => state.sweep(),
        }
    }
    while let Ok(input) = rx.try_recv() {
        state.take(input);
    }
    state.take_summaries(usize::MAX);
    state.flush();
    // Dropping the clients' senders ends their queues: they send what is left, then close.
}

impl State {
    /// Queues `frame` for every client, never waiting: a client without room is dropped from
    /// the fan-out and flagged to resubscribe.
    fn broadcast(&mut self, frame: Frame) {
        self.send_where(&frame, |_| true);
    }

    /// Queues `frame` for the clients `wanted` picks, as [`State::broadcast`].
    fn send_where(&mut self, frame: &Frame, wanted: impl Fn(&Client) -> bool) {
        let max = self.queue_bytes;
        self.clients
            .retain(|c| !wanted(c) || offer(c, frame.clone(), max));
    }

    fn take(&mut self, input: HubInput) {
        match input {
            HubInput::Telemetry(records) => {
                let (now, wall) = (Instant::now(), now_ms());
                for record in records {
                    let key = record.key;
                    match self.fleet.find(key, &record.name) {
                        Some(u) => {
                            let (lat, lon) = (record.latitude, record.longitude);
                            u.record = record;
                            u.seen = now;
                            u.seen_ms = wall;
                            if !u.pending {
                                u.pending = true;
                                self.pending.push((key, Arc::clone(&u.record.name)));
                            }
                            if !Grid::holds(u.place, lat, lon) {
                                let (name, from) = (Arc::clone(&u.record.name), u.place);
                                self.move_to(&name, from, lat, lon);
                            }
                        }
                        None => {
                            self.pending.push((key, Arc::clone(&record.name)));
                            self.names.insert(ByName(Arc::clone(&record.name)));
                            let summary = self.early.iter_mut().find_map(|e| {
                                (!e.is_empty()).then(|| e.remove(&*record.name)).flatten()
                            });
                            let place =
                                self.grid
                                    .insert(&record.name, record.latitude, record.longitude);
                            self.fleet.insert(
                                key,
                                Unicorn {
                                    record,
                                    seen: now,
                                    seen_ms: wall,
                                    summary,
                                    pending: true,
                                    place,
                                },
                            );
                        }
                    }
                }
                self.snapshot = None;
            }
            HubInput::Summaries(summaries) => self.summaries_due.push_back((summaries, 0)),
            HubInput::Subscribe(reply, view) => {
                let (frame, view) = match view {
                    None => (
                        self.snapshot
                            .get_or_insert_with(|| snapshot(&self.fleet, &self.names, &self.firing))
                            .clone(),
                        None,
                    ),
                    Some(view) => {
                        let (frame, records) = self.view_snapshot(&view);
                        (frame, Some(ClientView { view, records }))
                    }
                };
                let id = self.next_id;
                self.next_id += 1;
                let (tx, frames) = mpsc::channel(self.queue);
                let queued = Arc::new(AtomicUsize::new(0));
                let lagged = Arc::new(AtomicBool::new(false));
                let sub = LiveSubscription {
                    id,
                    snapshot: frame,
                    frames,
                    queued: Arc::clone(&queued),
                    lagged: Arc::clone(&lagged),
                };
                if reply.send(sub).is_ok() {
                    let client = Client {
                        id,
                        tx,
                        queued,
                        lagged,
                        view,
                        views: Vec::new(),
                    };
                    let keep = match &client.view {
                        Some(v) if !v.records => {
                            offer(&client, self.density_frame(&v.view), self.queue_bytes)
                        }
                        _ => true,
                    };
                    if keep {
                        self.clients.push(client);
                    }
                }
            }
            HubInput::Views { id, views } => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.id == id) {
                    c.views = views;
                }
            }
            HubInput::ViewRows { view, rows } => {
                if self.clients.iter().any(|c| c.views.contains(&view)) {
                    let mut frame =
                        String::with_capacity(64 + rows.iter().map(String::len).sum::<usize>());
                    frame.push_str("{\"type\":\"view\",\"view\":");
                    frame.push_str(&serde_json::Value::String(view.to_string()).to_string());
                    frame.push_str(",\"rows\":[");
                    for (i, row) in rows.iter().enumerate() {
                        if i > 0 {
                            frame.push(',');
                        }
                        frame.push_str(row);
                    }
                    frame.push_str("]}");
                    self.send_where(&Frame::from(frame), |c| c.views.contains(&view));
                }
            }
            HubInput::View { id, view } => {
                let (frame, records) = self.view_snapshot(&view);
                let density = (!records).then(|| self.density_frame(&view));
                let max = self.queue_bytes;
                self.clients.retain_mut(|c| {
                    if c.id != id {
                        return true;
                    }
                    c.view = Some(ClientView { view, records });
                    offer(c, frame.clone(), max)
                        && density.as_ref().is_none_or(|d| offer(c, d.clone(), max))
                });
            }
            HubInput::Unicorns(query, reply) => {
                if self.table_spent >= self.table_budget {
                    let _ = reply.send(Err(TableBusy));
                    return;
                }
                // Real time, not the runtime's (which tests may pause).
                let began = std::time::Instant::now();
                let page = match &query {
                    Some(q) => table::page(&self.fleet, &self.names, q),
                    None => table::Page {
                        total: self.fleet.len(),
                        rows: sorted(&self.fleet, &self.names),
                    },
                };
                let mut out = String::with_capacity(2 + page.rows.len() * 300);
                out.push('[');
                for (i, u) in page.rows.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    u.write_row(&mut out);
                }
                out.push(']');
                let _ = reply.send(Ok(UnicornList {
                    total: page.total,
                    body: Bytes::from(out),
                }));
                self.table_spent += began.elapsed();
            }
            HubInput::Alerts {
                partition,
                changes,
                notified,
            } => self.take_alerts(&partition, &changes, notified),
            HubInput::Released(partition) => {
                let before = self.firing.len();
                self.firing.retain(|_, (p, _)| *p != partition);
                if self.firing.len() != before {
                    // The clients' lists of firing alerts are out of date: a fresh snapshot.
                    self.snapshot = None;
                    for client in self.clients.drain(..) {
                        client.lagged.store(true, Ordering::Relaxed);
                    }
                }
            }
            HubInput::AlertList(query, reply) => {
                let _ = reply.send(self.alert_list(&query));
            }
        }
    }

    /// Takes in at most `limit` of the summaries due, oldest first. A minute's close brings
    /// every unicorn's summary at once — a million, for a fleet of a million — and taking them
    /// in slices lets telemetry frames go out between them.
    fn take_summaries(&mut self, limit: usize) {
        let mut left = limit;
        while left > 0 {
            let Some((batch, from)) = self.summaries_due.front_mut() else {
                break;
            };
            let batch = Arc::clone(batch);
            let start = *from;
            let end = batch.len().min(start.saturating_add(left));
            *from = end;
            if end == batch.len() {
                self.summaries_due.pop_front();
            }
            left -= end - start;
            for s in &batch[start..end] {
                let newer = |old: Option<&Summary>| {
                    old.is_none_or(|old| {
                        (s.window_start, s.revision) >= (old.window_start, old.revision)
                    })
                };
                // Clients of a view get the summaries of the unicorns in it.
                let at = match self.fleet.get_mut(s.name.as_str()) {
                    Some(u) => {
                        if newer(u.summary.as_deref()) {
                            u.summary = Some(Box::new(s.clone()));
                        }
                        Some((u.record.latitude, u.record.longitude))
                    }
                    None => {
                        if newer(self.early[0].get(&s.name).map(AsRef::as_ref)) {
                            self.early[0].insert(s.name.clone(), Box::new(s.clone()));
                        }
                        None
                    }
                };
                let wanted = |c: &Client| match &c.view {
                    None => true,
                    Some(v) => v.records && at.is_some_and(|(lat, lon)| v.view.contains(lat, lon)),
                };
                // A minute's close brings every unicorn's summary at once: only those some
                // client gets are written out.
                if self.clients.iter().any(wanted) {
                    let mut frame = String::with_capacity(320);
                    frame.push_str("{\"type\":\"summary\",\"summary\":");
                    s.write_json(&mut frame);
                    frame.push('}');
                    self.send_where(&Frame::from(frame), wanted);
                }
            }
        }
        self.snapshot = None;
    }

    /// Moves `name` from `from` to its new cell in the grid.
    fn move_to(&mut self, name: &Arc<str>, from: Place, lat: f64, lon: f64) {
        self.leave_grid(from);
        let place = self.grid.insert(name, lat, lon);
        if let Some(u) = self.fleet.get_mut(name) {
            u.place = place;
        }
    }

    /// Takes whoever is at `place` out of the grid, noting the new place of the name that
    /// fills the gap.
    fn leave_grid(&mut self, place: Place) {
        if let Some((moved, to)) = self.grid.remove(place) {
            if let Some(u) = self.fleet.get_mut(&moved) {
                u.place = to;
            }
        }
    }

    /// Keeps the firing list and the recent changes, and tells every client.
    fn take_alerts(&mut self, partition: &Arc<str>, changes: &[Change], notified: bool) {
        for change in changes {
            let key = (Arc::clone(&change.rule), change.name.clone());
            match change.state {
                AlertState::Firing => {
                    self.firing
                        .insert(key, (Arc::clone(partition), change.clone()));
                }
                AlertState::Resolved => {
                    self.firing.remove(&key);
                }
            }
            if notified {
                if self.recent.len() == RECENT_ALERTS {
                    self.recent.pop_front();
                }
                self.recent.push_back(change.clone());
            }
            let mut frame = String::with_capacity(256);
            frame.push_str("{\"type\":\"alert\",\"alert\":");
            change.write_json(&mut frame);
            frame.push('}');
            self.broadcast(Frame::from(frame));
        }
        self.snapshot = None;
    }

    /// `GET /api/alerts`: newest first.
    fn alert_list(&self, q: &AlertQuery) -> Bytes {
        let wanted = |c: &&Change| q.name.as_deref().is_none_or(|n| c.name == n);
        let mut list: Vec<&Change> = if q.all {
            self.recent
                .iter()
                .rev()
                .filter(wanted)
                .take(q.limit)
                .collect()
        } else {
            let mut firing: Vec<&Change> = self
                .firing
                .values()
                .map(|(_, c)| c)
                .filter(wanted)
                .collect();
            firing.sort_by(|a, b| {
                (b.status_time, &a.rule, &a.name).cmp(&(a.status_time, &b.rule, &b.name))
            });
            firing.truncate(q.limit);
            firing
        };
        let mut out = String::from("[");
        for (i, c) in list.drain(..).enumerate() {
            if i > 0 {
                out.push(',');
            }
            c.write_json(&mut out);
        }
        out.push(']');
        Bytes::from(out)
    }

    /// One telemetry frame with the latest record of every unicorn heard since the last one,
    /// for the clients of the whole fleet; for each client of a view, one with those in it.
    /// A record is serialised once, and only if some client will get it (with no clients, or
    /// only clients of small views, most of a big fleet's records are not).
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let whole_fleet = self.clients.iter().any(|c| c.view.is_none());
        let views: Vec<&View> = self
            .clients
            .iter()
            .filter_map(|c| c.view.as_ref().filter(|v| v.records).map(|v| &v.view))
            .collect();
        let mut buf = String::new();
        // (start, end) in `buf`, latitude, longitude.
        let mut parts: Vec<(usize, usize, f64, f64)> = Vec::new();
        for (key, name) in self.pending.drain(..) {
            let Some(u) = self.fleet.find(key, &name) else {
                continue;
            };
            u.pending = false;
            let (lat, lon) = (u.record.latitude, u.record.longitude);
            if whole_fleet || views.iter().any(|v| v.contains(lat, lon)) {
                let start = buf.len();
                u.record.write_json(&mut buf, u.seen_ms);
                parts.push((start, buf.len(), lat, lon));
            }
        }
        let frame = |wanted: &dyn Fn(f64, f64) -> bool| -> Option<Frame> {
            let mut out = String::new();
            for &(start, end, _, _) in parts.iter().filter(|p| wanted(p.2, p.3)) {
                out.push_str(if out.is_empty() {
                    "{\"type\":\"telemetry\",\"records\":["
                } else {
                    ","
                });
                out.push_str(&buf[start..end]);
            }
            (!out.is_empty()).then(|| {
                out.push_str("]}");
                Frame::from(out)
            })
        };
        if self.clients.iter().any(|c| c.view.is_none()) {
            if let Some(all) = frame(&|_, _| true) {
                self.send_where(&all, |c| c.view.is_none());
            }
        }
        let max = self.queue_bytes;
        self.clients.retain(|c| match &c.view {
            Some(v) if v.records => {
                frame(&|lat, lon| v.view.contains(lat, lon)).is_none_or(|f| offer(c, f, max))
            }
            _ => true,
        });
    }

    /// A snapshot of `view`: its unicorns while they are at most [`MAX_IN_VIEW`] (`true`),
    /// none otherwise (`false`: counts follow), the fleet's size and every firing alert.
    fn view_snapshot(&mut self, view: &View) -> (Frame, bool) {
        let total = self.fleet.len();
        let records = self.grid.count_in(view) <= MAX_IN_VIEW;
        let mut inside = if records {
            in_view(&self.fleet, &self.grid, view)
        } else {
            Vec::new()
        };
        inside.sort_by(|a, b| table::natural(&a.record.name, &b.record.name));
        let mut out = String::with_capacity(128 + inside.len() * 500);
        let _ = write!(
            out,
            "{{\"type\":\"snapshot\",\"view\":true,\"total\":{total},"
        );
        write_area(&mut out, view);
        write_bounds(&mut out, &self.grid);
        out.push_str("\"unicorns\":[");
        write_unicorns(&mut out, &inside, &self.firing);
        (Frame::from(out), records)
    }

    /// `{"type":"density"}`: the fleet's size and the counts per cell in `view`.
    fn density_frame(&mut self, view: &View) -> Frame {
        let total = self.fleet.len();
        let (step, cells) = self.grid.density(view);
        let mut out = String::with_capacity(128 + cells.len() * 32);
        let _ = write!(
            out,
            "{{\"type\":\"density\",\"total\":{total},\"cell\":{step},"
        );
        write_area(&mut out, view);
        write_bounds(&mut out, &self.grid);
        out.push_str("\"cells\":[");
        for (i, (lat, lon, n)) in cells.iter().enumerate() {
            let sep = if i > 0 { "," } else { "" };
            let _ = write!(out, "{sep}[{lat:.5},{lon:.5},{n}]");
        }
        out.push_str("]}");
        Frame::from(out)
    }

    /// Once a second: the grid's bounds, and each client of a view's mode: counts for those
    /// past [`MAX_IN_VIEW`], a snapshot for those that came under it.
    fn refresh_views(&mut self) {
        self.grid.refresh();
        if self.clients.iter().all(|c| c.view.is_none()) {
            return;
        }
        let views: Vec<(u64, View, bool)> = self
            .clients
            .iter()
            .filter_map(|c| c.view.as_ref().map(|v| (c.id, v.view, v.records)))
            .collect();
        for (id, view, was_records) in views {
            let records = self.grid.count_in(&view) <= MAX_IN_VIEW;
            let frame = if !records {
                Some(self.density_frame(&view))
            } else if !was_records {
                Some(self.view_snapshot(&view).0)
            } else {
                None
            };
            let max = self.queue_bytes;
            self.clients.retain_mut(|c| {
                if c.id != id {
                    return true;
                }
                if let Some(v) = c.view.as_mut() {
                    v.records = records;
                }
                frame.clone().is_none_or(|f| offer(c, f, max))
            });
        }
    }

    /// Drops unicorns silent for `silent_after`, telling the clients, and gives back the
    /// memory of a fleet that shrank. When more than [`MAX_SILENT_FRAMES`] fall silent at once
    /// (the end of a flood of names), the clients are resynchronised with a fresh snapshot
    /// instead: cheaper for them and for the hub than a frame per name.
    fn sweep(&mut self) {
        // Clients that left: their queues' memory goes now, not at the next frame (an idle
        // fleet sends none).
        self.clients.retain(|c| !c.tx.is_closed());
        self.early[1] = std::mem::take(&mut self.early[0]);
        self.table_spent = Duration::ZERO;
        self.refresh_views();
        self.fleet.tidy();
        let now = Instant::now();
        let silent: Vec<Arc<str>> = self
            .fleet
            .iter()
            .filter(|u| now.duration_since(u.seen) >= self.silent_after)
            .map(|u| Arc::clone(&u.record.name))
            .collect();
        if silent.is_empty() {
            return;
        }
        for name in &silent {
            if let Some(u) = self.fleet.remove(name) {
                self.leave_grid(u.place);
            }
            self.names.remove(&ByName(Arc::clone(name)));
        }
        self.pending.retain(|(_, n)| self.fleet.contains(n));
        self.snapshot = None;
        if silent.len() > MAX_SILENT_FRAMES {
            for client in self.clients.drain(..) {
                client.lagged.store(true, Ordering::Relaxed);
            }
        } else {
            for name in &silent {
                let mut frame = String::from("{\"type\":\"silent\",\"name\":");
                write_json_string(&mut frame, name);
                frame.push('}');
                self.broadcast(Frame::from(frame));
            }
        }
        crate::window::shrink_mostly_empty(&mut self.pending);
    }
}

/// The unicorns in `view`, found through the grid.
fn in_view<'a>(fleet: &'a Fleet, grid: &Grid, view: &View) -> Vec<&'a Unicorn> {
    grid.candidates(view)
        .filter_map(|name| fleet.get(name))
        .filter(|u| view.contains(u.record.latitude, u.record.longitude))
        .collect()
}

/// Queues `frame` for `c` if it has room; `false` (and flagged to resubscribe) if not, or gone.
fn offer(c: &Client, frame: Frame, max_bytes: usize) -> bool {
    let len = frame.as_str().len();
    if c.queued.load(Ordering::Relaxed) + len > max_bytes {
        c.lagged.store(true, Ordering::Relaxed);
        return false;
    }
    match c.tx.try_send(frame) {
        Ok(()) => {
            c.queued.fetch_add(len, Ordering::Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            c.lagged.store(true, Ordering::Relaxed);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
