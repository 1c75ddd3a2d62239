//! The usage vector, and CPU time of a process tree from `/proc`.

use std::collections::HashMap;

/// CPU seconds (user + system, including reaped children) used so far by `root` and every live
/// descendant of it; `None` if `root` is gone.
pub(crate) fn tree_cpu_seconds(root: u32) -> Option<f64> {
    let mut stats = HashMap::new();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((ppid, ticks)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        else {
            continue;
        };
        stats.insert(pid, ticks);
        children.entry(ppid).or_default().push(pid);
    }
    stats.get(&root)?;
    let mut total = 0u64;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        total += stats.get(&pid).copied().unwrap_or(0);
        if let Some(kids) = children.get(&pid) {
            todo.extend(kids);
        }
    }
    Some(total as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// `(ppid, utime + stime + cutime + cstime)` of a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // The command name (field 2) may contain spaces and parentheses: fields after it start
    // after the last `)`. There, field 3 (state) is index 0.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = (11..=14)
        .map(|i| fields.get(i)?.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some((ppid, ticks))
}

/// The time counter (seconds since the activity was created).
pub const DURATION_SEC: &str = "golem.usage.duration_sec";
/// CPU seconds of the runtime and its descendants.
pub const CPU_SEC: &str = "golem.usage.cpu_sec";

/// The usage vector in the agreement's order (`golem.com.usage.vector`): duration and CPU are
/// measured here; any other name is a counter the runtime reports (custom counters, as yagna's
/// exe-unit calls them), 0 until it does.
pub(crate) fn usage_vector(
    names: &[String],
    duration_sec: f64,
    cpu_sec: f64,
    counter: impl Fn(&str) -> Option<f64>,
) -> Vec<f64> {
    names
        .iter()
        .map(|name| match name.as_str() {
            DURATION_SEC => duration_sec,
            CPU_SEC => cpu_sec,
            other => counter(other).unwrap_or(0.0),
        })
        .collect()
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            Some(!rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_stat() {
        let line = "42 (a b) c) S 7 42 42 0 -1 4194560 100 0 0 0 30 12 5 3 20 0 1 0 1 2 3";
        assert_eq!(parse_stat(line), Some((7, 30 + 12 + 5 + 3)));
    }

    #[test]
    fn the_vector_follows_the_agreement() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let counters = |name: &str| (name == "golem.usage.erigolem.requests").then_some(37.0);
        assert_eq!(
            usage_vector(&names(&[DURATION_SEC, CPU_SEC]), 5.0, 0.5, counters),
            [5.0, 0.5]
        );
        assert_eq!(
            usage_vector(
                &names(&[CPU_SEC, "golem.usage.erigolem.requests", DURATION_SEC]),
                5.0,
                0.5,
                counters
            ),
            [0.5, 37.0, 5.0]
        );
        assert_eq!(
            usage_vector(&names(&["golem.usage.storage_gib"]), 5.0, 0.5, counters),
            [0.0],
            "a counter nobody reports stays 0"
        );
    }

    #[test]
    fn own_process() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(tree_cpu_seconds(me).is_some_and(|s| s >= 0.0));
        assert!(!alive(u32::MAX - 1));
        assert_eq!(tree_cpu_seconds(u32::MAX - 1), None);
    }
}
