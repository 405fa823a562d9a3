//! Bind-slot assignment: which ready pod holds which of a link's
//! `sessions` binds. Pure, deterministic and stable: a slot stays where it
//! is unless its pod is gone or holds more than its fair share.
//!
//! The assignment only says who *should* bind; the cap itself is enforced
//! by one Lease per slot (`smsgw-<link>-slot-<i>`), which a pod must hold before
//! binding. A slot that moves is therefore bound by its new pod only once
//! the old one released the Lease or it expired (within one lease
//! duration).

use std::collections::{BTreeMap, BTreeSet};

pub use smsgw_leases::{SlotId, lease_name};

/// Slot → pod.
pub type Assignment = BTreeMap<SlotId, String>;

/// Spreads every link's slots (`links`: name → `sessions`) over the ready
/// pods so that, per link, pod counts differ by at most one, keeping each
/// slot of `current` on its pod while that pod is ready and within its
/// share. Links are handled in name order and the extra slots of a link go
/// to the pods with the fewest slots overall, so the total load evens out
/// too. With no ready pod nothing is assigned.
pub fn assign_slots(
    links: &BTreeMap<String, u32>,
    ready_pods: &BTreeSet<String>,
    current: &Assignment,
) -> Assignment {
    let mut out = Assignment::new();
    if ready_pods.is_empty() {
        return out;
    }
    let pods: Vec<&String> = ready_pods.iter().collect();
    let mut total: BTreeMap<&str, u32> = pods.iter().map(|p| (p.as_str(), 0)).collect();
    for (link, &sessions) in links {
        let n = pods.len() as u32;
        let (base, extra) = (sessions / n, sessions % n);
        // Slots of this link each ready pod holds now.
        let mut held: BTreeMap<&str, u32> = BTreeMap::new();
        for slot in 0..sessions {
            if let Some(p) = current.get(&SlotId::new(link.as_str(), slot))
                && ready_pods.contains(p)
            {
                *held.entry(p.as_str()).or_default() += 1;
            }
        }
        // Who gets one of the `extra` slots: pods already holding more of
        // this link first (fewer moves), then the least loaded overall.
        let mut order: Vec<&str> = pods.iter().map(|p| p.as_str()).collect();
        order.sort_by_key(|p| {
            (
                std::cmp::Reverse(held.get(p).copied().unwrap_or(0).min(base + 1)),
                total[p],
                *p,
            )
        });
        let mut quota: BTreeMap<&str, u32> = order
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, base + u32::from((i as u32) < extra)))
            .collect();
        // Keep what may stay.
        let mut free = Vec::new();
        for slot in 0..sessions {
            let id = SlotId::new(link.as_str(), slot);
            match current.get(&id).map(String::as_str) {
                Some(p) if quota.get(p).is_some_and(|q| *q > 0) => {
                    *quota.get_mut(p).expect("checked") -= 1;
                    *total.get_mut(p).expect("ready pod") += 1;
                    out.insert(id, p.to_owned());
                }
                _ => free.push(id),
            }
        }
        // Fill the rest, least loaded pod first.
        for id in free {
            let pod = quota
                .iter()
                .filter(|(_, q)| **q > 0)
                .map(|(p, _)| *p)
                .min_by_key(|p| (total[p], *p))
                .expect("quotas add up to sessions");
            *quota.get_mut(pod).expect("present") -= 1;
            *total.get_mut(pod).expect("ready pod") += 1;
            out.insert(id, pod.to_owned());
        }
    }
    out
}

/// The slots of `pod` in `assignment`, by link.
pub fn slots_of<'a>(assignment: &'a Assignment, pod: &str) -> BTreeMap<&'a str, Vec<u32>> {
    let mut out: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (id, p) in assignment {
        if p == pod {
            out.entry(id.link.as_str()).or_default().push(id.slot);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn links(l: &[(&str, u32)]) -> BTreeMap<String, u32> {
        l.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    fn per_pod(a: &Assignment, link: &str) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for (id, p) in a {
            if id.link == link {
                *m.entry(p.clone()).or_default() += 1;
            }
        }
        m
    }

    fn moved(a: &Assignment, b: &Assignment) -> usize {
        a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count()
    }

    #[test]
    fn every_slot_goes_to_a_ready_pod_and_links_spread_evenly() {
        for n_pods in 1..=5 {
            let names: Vec<String> = (0..n_pods).map(|i| format!("pod-{i}")).collect();
            let ready: BTreeSet<String> = names.iter().cloned().collect();
            for sessions in 1..=9 {
                let l = links(&[("a", sessions), ("b", 3)]);
                let a = assign_slots(&l, &ready, &Assignment::new());
                assert_eq!(a.len() as u32, sessions + 3);
                assert!(a.values().all(|p| ready.contains(p)));
                for link in ["a", "b"] {
                    let counts = per_pod(&a, link);
                    let max = counts.values().max().copied().unwrap_or(0);
                    let min = if counts.len() < n_pods {
                        0
                    } else {
                        counts.values().min().copied().unwrap_or(0)
                    };
                    assert!(max - min <= 1, "{n_pods} pods, {sessions}: {counts:?}");
                }
            }
        }
    }

    #[test]
    fn the_extra_slots_of_several_links_land_on_different_pods() {
        let l = links(&[("a", 1), ("b", 1), ("c", 1)]);
        let a = assign_slots(&l, &pods(&["p1", "p2", "p3"]), &Assignment::new());
        let used: BTreeSet<&String> = a.values().collect();
        assert_eq!(used.len(), 3, "{a:?}");
    }

    #[test]
    fn no_ready_pod_means_no_slot_is_assigned() {
        let a = assign_slots(&links(&[("a", 4)]), &BTreeSet::new(), &Assignment::new());
        assert!(a.is_empty());
    }

    #[test]
    fn a_dead_pods_slots_move_and_the_others_stay() {
        let l = links(&[("a", 6)]);
        let before = assign_slots(&l, &pods(&["p1", "p2", "p3"]), &Assignment::new());
        let after = assign_slots(&l, &pods(&["p1", "p2"]), &before);
        assert!(after.values().all(|p| p != "p3"));
        assert_eq!(after.len(), 6);
        // Only the dead pod's two slots changed hands.
        assert_eq!(moved(&before, &after), 2);
        assert_eq!(
            per_pod(&after, "a").values().copied().collect::<Vec<_>>(),
            [3, 3]
        );
    }

    #[test]
    fn a_new_pod_takes_only_its_share() {
        let l = links(&[("a", 4)]);
        let before = assign_slots(&l, &pods(&["p1", "p2"]), &Assignment::new());
        let after = assign_slots(&l, &pods(&["p1", "p2", "p3", "p4"]), &before);
        assert_eq!(moved(&before, &after), 2);
        assert!(per_pod(&after, "a").values().all(|c| *c == 1));
    }

    #[test]
    fn the_assignment_is_stable_when_nothing_changes() {
        let l = links(&[("a", 5), ("b", 2)]);
        let ready = pods(&["p1", "p2", "p3"]);
        let first = assign_slots(&l, &ready, &Assignment::new());
        assert_eq!(assign_slots(&l, &ready, &first), first);
    }

    #[test]
    fn shrinking_a_link_drops_its_high_slots() {
        let ready = pods(&["p1", "p2"]);
        let before = assign_slots(&links(&[("a", 4)]), &ready, &Assignment::new());
        let after = assign_slots(&links(&[("a", 2)]), &ready, &before);
        let slots: Vec<u32> = after.keys().map(|k| k.slot).collect();
        assert_eq!(slots, [0, 1]);
        assert_eq!(
            per_pod(&after, "a").len(),
            2,
            "still one per pod: {after:?}"
        );
    }

    #[test]
    fn leases_are_named_after_link_and_slot() {
        assert_eq!(SlotId::new("sim", 3).lease_name(), "smsgw-sim-slot-3");
        let a = assign_slots(&links(&[("a", 3)]), &pods(&["p1"]), &Assignment::new());
        assert_eq!(slots_of(&a, "p1")["a"], [0, 1, 2]);
    }
}
