//! The alert state in a partition's checkpoint: written as text beside the window engine's
//! state, taken up by the next owner of the partition (see the module docs of [`super`]).

use super::*;
use crate::clients::http::{percent_decode, percent_encode};

impl Alerts {
    /// The unicorns with state, as text for a checkpoint (`None` when there is none): entries
    /// `NAME@NEWEST` then `:RULE=SINCE/VALUE/f` (firing) or `:RULE=SINCE/-/p` (a streak under
    /// way) per rule with state, separated by `;`, names percent-encoded. `name` gives the name
    /// of an id.
    pub fn checkpoint<'n>(&self, name: impl Fn(NameId) -> &'n str) -> Option<String> {
        let n = self.rules.len();
        let mut out = String::new();
        let entry = |out: &mut String, name: &str, newest: Millis, slots: &[Slot]| {
            if !out.is_empty() {
                out.push(';');
            }
            percent_encode(out, name);
            let _ = write!(out, "@{newest}");
            for (rule, slot) in self.rules.iter().zip(slots) {
                if *slot == FRESH {
                    continue;
                }
                out.push(':');
                percent_encode(out, &rule.name);
                if slot.firing {
                    let _ = write!(out, "={}/{}/f", slot.since, slot.value);
                } else {
                    let _ = write!(out, "={}/-/p", slot.since);
                }
            }
        };
        for (idx, u) in self.unicorns.iter().enumerate() {
            if u.active & !UNSEEN != 0 {
                entry(
                    &mut out,
                    name(idx as NameId),
                    u.newest,
                    &self.slots[idx * n..(idx + 1) * n],
                );
            }
        }
        for (name, r) in &self.restored {
            entry(&mut out, name, r.newest, &r.slots);
        }
        (!out.is_empty()).then_some(out)
    }

    /// Takes up the state [`Alerts::checkpoint`] wrote (on a fresh `Alerts`, before any
    /// record). Rules are matched by name.
    ///
    /// # Errors
    /// The text is not what `checkpoint` writes (the caller starts without alert state and
    /// says so).
    pub fn restore(&mut self, text: &str) -> Result<(), String> {
        let bad = || format!("unreadable alert state in the checkpoint: {text:.80}");
        for entry in text.split(';').filter(|e| !e.is_empty()) {
            let mut parts = entry.split(':');
            let head = parts.next().ok_or_else(bad)?;
            let (name, newest) = head.rsplit_once('@').ok_or_else(bad)?;
            let name = percent_decode(name).ok_or_else(bad)?;
            let newest: Millis = newest.parse().map_err(|_| bad())?;
            let mut slots = vec![FRESH; self.rules.len()];
            for part in parts {
                let (rule, state) = part.split_once('=').ok_or_else(bad)?;
                let rule = percent_decode(rule).ok_or_else(bad)?;
                let mut fields = state.split('/');
                let since: Millis = fields.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                let value = fields.next().ok_or_else(bad)?;
                let firing = match fields.next() {
                    Some("f") => true,
                    Some("p") => false,
                    _ => return Err(bad()),
                };
                let value: f32 = if firing {
                    value.parse().map_err(|_| bad())?
                } else {
                    0.0
                };
                if let Some(i) = self.rules.iter().position(|r| *r.name == *rule) {
                    slots[i] = Slot {
                        since,
                        value,
                        firing,
                    };
                }
            }
            if slots.iter().any(|s| *s != FRESH) {
                self.restored.insert(name, Restored { newest, slots });
            }
        }
        Ok(())
    }

    /// Unicorn `idx`, seen for the first time since a resume, takes up its restored state if
    /// it has one; the newest time evaluated before, if so.
    #[cold]
    pub(super) fn take_restored(&mut self, idx: usize, name: &str) -> Option<Millis> {
        let r = self.restored.remove(name)?;
        let n = self.rules.len();
        let mut active = 0u64;
        for (i, slot) in r.slots.iter().enumerate() {
            if *slot != FRESH {
                active |= 1 << i;
            }
        }
        self.slots[idx * n..(idx + 1) * n].copy_from_slice(&r.slots);
        self.unicorns[idx] = Unicorn {
            newest: r.newest,
            active,
        };
        Some(r.newest)
    }
}
