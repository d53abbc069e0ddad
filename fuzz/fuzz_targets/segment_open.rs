//! Fuzz the segment log's recovery: arbitrary bytes as the active segment.
//! Opening never panics; when it succeeds, every record it kept reads back,
//! and a second open finds the same records and nothing more to truncate.
#![no_main]

use kids_core::{SegmentConfig, SegmentLog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("kids-fuzz-seglog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("fuzz dir");
    std::fs::write(dir.join("00000000000000000001.seg"), data).expect("segment");
    let config = SegmentConfig::default().max_record_bytes(1 << 16);
    if let Ok((log, first)) = SegmentLog::open(&dir, config) {
        let mut at = log.start();
        let records = log.read(&mut at, usize::MAX).expect("kept records read back");
        assert_eq!(records.len() as u64, first.records);
        drop(log);
        let (_, again) = SegmentLog::open(&dir, config).expect("reopens");
        assert_eq!((again.records, again.truncated_bytes), (first.records, 0));
    }
    let _ = std::fs::remove_dir_all(&dir);
});
