//! The YAML bodies of `stats`, `stats-job`, `stats-tube` and `list-tubes*`,
//! byte for byte as beanstalkd 1.12's `fmt_stats`, `fmt_job_stats`,
//! `fmt_stats_tube` and `do_list_tubes` print them (without the final
//! `\r\n`, which the codec adds after any `OK` body).

use std::fmt::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::machine::{Engine, Job, JobState, Op, Tube};

/// Whole seconds from `now` to `at`, truncated toward zero as C's integer
/// division of nanoseconds truncates (negative once `at` passed).
fn secs_until(at: Instant, now: Instant) -> i64 {
    if at >= now {
        i64::try_from((at - now).as_secs()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from((now - at).as_secs()).unwrap_or(i64::MAX)
    }
}

fn micros(d: Duration) -> String {
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

/// `stats`
pub(super) fn stats(engine: &Engine, now: Instant) -> Bytes {
    let c = &engine.counters;
    let op = |o: Op| c.ops[o as usize];
    let p = &engine.process;
    let h = &engine.config.host;
    let uptime = engine
        .started
        .map_or(0, |s| now.saturating_duration_since(s).as_secs());
    let mut s = String::with_capacity(1024);
    let _ = write!(
        s,
        "---\n\
         current-jobs-urgent: {}\n\
         current-jobs-ready: {}\n\
         current-jobs-reserved: {}\n\
         current-jobs-delayed: {}\n\
         current-jobs-buried: {}\n\
         cmd-put: {}\n\
         cmd-peek: {}\n\
         cmd-peek-ready: {}\n\
         cmd-peek-delayed: {}\n\
         cmd-peek-buried: {}\n\
         cmd-reserve: {}\n\
         cmd-reserve-with-timeout: {}\n\
         cmd-delete: {}\n\
         cmd-release: {}\n\
         cmd-use: {}\n\
         cmd-watch: {}\n\
         cmd-ignore: {}\n\
         cmd-bury: {}\n\
         cmd-kick: {}\n\
         cmd-touch: {}\n\
         cmd-stats: {}\n\
         cmd-stats-job: {}\n\
         cmd-stats-tube: {}\n\
         cmd-list-tubes: {}\n\
         cmd-list-tube-used: {}\n\
         cmd-list-tubes-watched: {}\n\
         cmd-pause-tube: {}\n\
         job-timeouts: {}\n\
         total-jobs: {}\n\
         max-job-size: {}\n\
         current-tubes: {}\n\
         current-connections: {}\n\
         current-producers: {}\n\
         current-workers: {}\n\
         current-waiting: {}\n\
         total-connections: {}\n\
         pid: {}\n\
         version: \"{}\"\n\
         rusage-utime: {}\n\
         rusage-stime: {}\n\
         uptime: {}\n\
         binlog-oldest-index: {}\n\
         binlog-current-index: {}\n\
         binlog-records-migrated: {}\n\
         binlog-records-written: {}\n\
         binlog-max-size: {}\n\
         draining: {}\n\
         id: {}\n\
         hostname: {}\n\
         os: {}\n\
         platform: {}\n",
        c.urgent,
        c.ready,
        c.reserved,
        engine.delayed_count(),
        c.buried,
        op(Op::Put),
        op(Op::Peek),
        op(Op::PeekReady),
        op(Op::PeekDelayed),
        op(Op::PeekBuried),
        op(Op::Reserve),
        op(Op::ReserveWithTimeout),
        op(Op::Delete),
        op(Op::Release),
        op(Op::Use),
        op(Op::Watch),
        op(Op::Ignore),
        op(Op::Bury),
        op(Op::Kick),
        op(Op::Touch),
        op(Op::Stats),
        op(Op::StatsJob),
        op(Op::StatsTube),
        op(Op::ListTubes),
        op(Op::ListTubeUsed),
        op(Op::ListTubesWatched),
        op(Op::PauseTube),
        c.timeouts,
        c.total_jobs,
        engine.config.max_job_size,
        engine.tube_list.len(),
        c.connections,
        c.producers,
        c.workers,
        c.waiting,
        c.total_connections,
        h.pid,
        h.version,
        micros(p.user_time),
        micros(p.system_time),
        uptime,
        p.binlog_oldest_index,
        p.binlog_current_index,
        p.binlog_records_migrated,
        p.binlog_records_written,
        p.binlog_max_size,
        engine.draining,
        h.id,
        h.hostname,
        h.os,
        h.platform,
    );
    Bytes::from(s)
}

/// `stats-job`
pub(super) fn job_stats(engine: &Engine, j: &Job, now: Instant) -> Bytes {
    let (state, time_left) = match j.state {
        JobState::Ready => ("ready", 0),
        JobState::Delayed => ("delayed", secs_until(j.deadline, now)),
        JobState::Reserved(_) => ("reserved", secs_until(j.deadline, now)),
        JobState::Buried => ("buried", 0),
    };
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "---\n\
         id: {}\n\
         tube: {}\n\
         state: {}\n\
         pri: {}\n\
         age: {}\n\
         delay: {}\n\
         ttr: {}\n\
         time-left: {}\n\
         file: 0\n\
         reserves: {}\n\
         timeouts: {}\n\
         releases: {}\n\
         buries: {}\n\
         kicks: {}\n",
        j.id,
        engine.tube(j.tube).name,
        state,
        j.pri,
        -secs_until(j.created, now),
        j.delay,
        j.ttr,
        time_left,
        j.reserves,
        j.timeouts,
        j.releases,
        j.buries,
        j.kicks,
    );
    Bytes::from(s)
}

/// `stats-tube`
pub(super) fn tube_stats(t: &Tube, now: Instant) -> Bytes {
    let time_left = t.unpause_at.map_or(0, |at| secs_until(at, now));
    let mut s = String::with_capacity(320);
    let _ = write!(
        s,
        "---\n\
         name: {}\n\
         current-jobs-urgent: {}\n\
         current-jobs-ready: {}\n\
         current-jobs-reserved: {}\n\
         current-jobs-delayed: {}\n\
         current-jobs-buried: {}\n\
         total-jobs: {}\n\
         current-using: {}\n\
         current-watching: {}\n\
         current-waiting: {}\n\
         cmd-delete: {}\n\
         cmd-pause-tube: {}\n\
         pause: {}\n\
         pause-time-left: {}\n",
        t.name,
        t.urgent,
        t.ready_len(),
        t.reserved,
        t.delayed_len(),
        t.buried_len(),
        t.total_jobs,
        t.using,
        t.watching,
        t.waiting_len(),
        t.deletes,
        t.pauses,
        t.pause.as_secs(),
        time_left,
    );
    Bytes::from(s)
}

/// `list-tubes`, `list-tubes-watched`: `---\n` then `- name\n` per tube.
pub(super) fn list<'a>(names: impl Iterator<Item = &'a str>) -> Bytes {
    let mut s = String::from("---\n");
    for name in names {
        s.push_str("- ");
        s.push_str(name);
        s.push('\n');
    }
    Bytes::from(s)
}
