//! Lease planning: which shards an instance should try to take, as a pure function of the lease
//! table (what it read, and which leases it saw expire), so that the coordinator only does the
//! I/O and the rules are tested without DynamoDB.
//!
//! The rules, as in the Kinesis Client Library: a shard is *active* when it is not finished and
//! its parents are finished (or gone); each instance that holds an unexpired active lease counts,
//! plus this one; the fair share is the active shards divided by the instances, rounded up. An
//! instance below its share takes free or expired leases; when there are none, it steals one
//! lease from the busiest other owner, if that owner has more than the share.

use std::collections::HashMap;

use super::leases::{Lease, SHARD_END};

/// What the coordinator should try: these leases, in order, until it holds `wanted` more.
#[derive(Debug, PartialEq)]
pub struct Plan<'a> {
    /// Leases to try to take, best first.
    pub candidates: Vec<&'a Lease>,
    /// How many more this instance should own.
    pub wanted: usize,
}

/// Plans for instance `me`, which runs readers for the shards `is_mine` says; `expired` says
/// whether a lease's counter has not moved for a lease period.
pub fn plan<'a>(
    all: &'a [Lease],
    me: &str,
    is_mine: impl Fn(&str) -> bool,
    expired: impl Fn(&Lease) -> bool,
) -> Plan<'a> {
    let finished = |shard: &str| {
        all.iter()
            .any(|l| l.shard == shard && l.sequence.as_deref() == Some(SHARD_END))
    };
    let exists = |shard: &str| all.iter().any(|l| l.shard == shard);
    let active: Vec<&Lease> = all
        .iter()
        .filter(|l| l.sequence.as_deref() != Some(SHARD_END))
        .filter(|l| l.parents.iter().all(|p| finished(p) || !exists(p)))
        .collect();
    let mut owners: HashMap<&str, usize> = HashMap::new();
    for l in &active {
        if !l.owner.is_empty() && !expired(l) && l.owner != me {
            *owners.entry(l.owner.as_str()).or_default() += 1;
        }
    }
    let target = active.len().div_ceil(owners.len() + 1);
    let mine = active.iter().filter(|l| is_mine(&l.shard)).count();
    if mine >= target {
        return Plan {
            candidates: Vec::new(),
            wanted: 0,
        };
    }
    let mut candidates: Vec<&Lease> = active
        .iter()
        .copied()
        .filter(|l| !is_mine(&l.shard))
        .filter(|l| l.owner.is_empty() || expired(l))
        .collect();
    if candidates.is_empty() {
        // Ties go to the owner named first, so that every instance picks the same one.
        let busiest = owners
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)));
        if let Some((busiest, n)) = busiest {
            if *n > target {
                candidates.extend(
                    active
                        .iter()
                        .copied()
                        .filter(|l| l.owner == *busiest)
                        .take(1),
                );
            }
        }
    }
    Plan {
        candidates,
        wanted: target - mine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(shard: &str, owner: &str) -> Lease {
        Lease {
            shard: shard.into(),
            owner: owner.into(),
            counter: 1,
            sequence: None,
            engine: None,
            parents: Vec::new(),
            tail: None,
        }
    }

    fn shards<'a>(plan: &Plan<'a>) -> Vec<&'a str> {
        plan.candidates.iter().map(|l| l.shard.as_str()).collect()
    }

    #[test]
    fn a_lone_instance_takes_every_free_shard() {
        let all = [lease("s0", ""), lease("s1", ""), lease("s2", "")];
        let p = plan(&all, "me", |_| false, |_| false);
        assert_eq!((shards(&p), p.wanted), (vec!["s0", "s1", "s2"], 3));
    }

    #[test]
    fn a_newcomer_steals_one_from_the_busiest_owner_above_its_share() {
        let all = [
            lease("s0", "old"),
            lease("s1", "old"),
            lease("s2", "old"),
            lease("s3", "old"),
        ];
        let p = plan(&all, "me", |_| false, |_| false);
        assert_eq!((shards(&p), p.wanted), (vec!["s0"], 2));
        // At its share, it takes nothing more.
        let all = [
            lease("s0", "me"),
            lease("s1", "me"),
            lease("s2", "old"),
            lease("s3", "old"),
        ];
        let p = plan(&all, "me", |s| s == "s0" || s == "s1", |_| false);
        assert_eq!((shards(&p), p.wanted), (vec![], 0));
    }

    #[test]
    fn expired_leases_are_taken_and_their_owner_no_longer_counts() {
        let all = [
            lease("s0", "dead"),
            lease("s1", "dead"),
            lease("s2", "me"),
            lease("s3", "me"),
        ];
        let p = plan(
            &all,
            "me",
            |s| s == "s2" || s == "s3",
            |l| l.owner == "dead",
        );
        assert_eq!((shards(&p), p.wanted), (vec!["s0", "s1"], 2));
        // Not expired: two instances, two shards each, nothing to do.
        let p = plan(&all, "me", |s| s == "s2" || s == "s3", |_| false);
        assert_eq!(p.wanted, 0);
    }

    #[test]
    fn a_child_waits_until_its_parents_are_finished() {
        let mut parent = lease("p", "other");
        let mut child = lease("c", "");
        child.parents = vec!["p".into()];
        let all = [parent.clone(), child.clone()];
        let p = plan(&all, "me", |_| false, |_| false);
        assert_eq!(
            shards(&p),
            Vec::<&str>::new(),
            "the parent is still being read"
        );
        parent.sequence = Some(SHARD_END.into());
        parent.owner.clear();
        let all = [parent, child.clone()];
        let p = plan(&all, "me", |_| false, |_| false);
        assert_eq!((shards(&p), p.wanted), (vec!["c"], 1));
        // A parent deleted past retention counts as finished.
        let all = [child];
        assert_eq!(shards(&plan(&all, "me", |_| false, |_| false)), vec!["c"]);
    }
}
