//! Fuzz the segment log's recovery: arbitrary bytes as the active segment.
//! Opening never panics; when it succeeds, every record it kept reads back,
//! and a second open finds the same records and nothing more to truncate.
//!
//! The files live in memory (a `LogFs` of this target's own): recovery's
//! logic is the same as on disk, and a run costs no system call, so the
//! fuzzer gets through a hundred times more inputs.
#![no_main]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kids_core::{LogFile, LogFs, OpenMode, SegmentConfig, SegmentLog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fs = Arc::new(MemFs::default());
    let dir = Path::new("/log");
    fs.put(&dir.join("00000000000000000001.seg"), data);
    let config = SegmentConfig::default().max_record_bytes(1 << 16);
    if let Ok((log, first)) = SegmentLog::open_with(dir, config, fs.clone()) {
        let mut at = log.start();
        let records = log.read(&mut at, usize::MAX).expect("kept records read back");
        assert_eq!(records.len() as u64, first.records);
        drop(log);
        let (_, again) = SegmentLog::open_with(dir, config, fs).expect("reopens");
        assert_eq!((again.records, again.truncated_bytes), (first.records, 0));
    }
});

/// Files in memory, by path; directories are implied by the paths.
#[derive(Debug, Default)]
struct MemFs {
    files: Mutex<BTreeMap<PathBuf, Arc<MemFile>>>,
}

#[derive(Debug, Default)]
struct MemFile {
    data: Mutex<Vec<u8>>,
}

impl MemFs {
    fn put(&self, path: &Path, data: &[u8]) {
        let file = MemFile {
            data: Mutex::new(data.to_vec()),
        };
        self.files.lock().unwrap().insert(path.to_owned(), Arc::new(file));
    }
}

impl LogFs for MemFs {
    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let files = self.files.lock().unwrap();
        Ok(files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn LogFile>> {
        let mut files = self.files.lock().unwrap();
        let found = files.get(path).cloned();
        let file = match (mode, found) {
            (OpenMode::Read | OpenMode::Write, Some(f)) => f,
            (OpenMode::Read | OpenMode::Write, None) => return Err(io::ErrorKind::NotFound.into()),
            (OpenMode::CreateNew, Some(_)) => return Err(io::ErrorKind::AlreadyExists.into()),
            (OpenMode::Truncate, Some(f)) => {
                f.data.lock().unwrap().clear();
                f
            }
            (OpenMode::CreateNew | OpenMode::Truncate, None) => {
                let f = Arc::new(MemFile::default());
                files.insert(path.to_owned(), f.clone());
                f
            }
            _ => return Err(io::ErrorKind::Unsupported.into()),
        };
        Ok(file)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match self.files.lock().unwrap().remove(path) {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.files.lock().unwrap();
        let file = files.remove(from).ok_or(io::ErrorKind::NotFound)?;
        files.insert(to.to_owned(), file);
        Ok(())
    }

    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
}

impl LogFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let data = self.data.lock().unwrap();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut data = self.data.lock().unwrap();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        if data.len() < start + buf.len() {
            data.resize(start + buf.len(), 0);
        }
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(buf.len())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.data.lock().unwrap().resize(len, 0);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.data.lock().unwrap().len() as u64)
    }
}
