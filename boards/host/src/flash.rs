//! NOR flash in a file, so a device on a Linux host (a sensor node, a
//! simulated device) keeps its queue and its sequence counter across
//! restarts, as a microcontroller keeps them across power cuts.
//!
//! ## Format and rules
//!
//! The file is the flash, byte for byte: `sectors * SECTOR` bytes, erased
//! bytes read `0xFF`. A new file is created erased; an existing file of
//! another size is refused (it belongs to another layout: see
//! [`FileFlashError::WrongSize`]), never truncated.
//!
//! NOR rules are enforced as on the chip: a write may only clear bits
//! (1 -> 0), so writing over written bytes fails with
//! [`FileFlashError::NotErased`]; an erase sets whole sectors to `0xFF`.
//! The firmware's store (`trygg_firmware::store`) relies on exactly these
//! rules and on nothing more.
//!
//! ## What is durable when
//!
//! Every write and every erase is followed by `fdatasync` before it
//! returns: when the store is told "written", it is on disk. A process
//! killed with SIGKILL mid-way therefore behaves like a device whose power
//! was cut: what returned is kept, a write in flight may be torn (the
//! store's CRCs find it).
//!
//! Reads are served from a copy in memory, kept equal to the file by the
//! write path. So the file belongs to one process: two devices writing one
//! log would corrupt it. (An exclusive `File::try_lock` would enforce that,
//! but it needs Rust 1.89 and the workspace's MSRV is 1.85: one file per
//! device id, by convention, until the MSRV moves.)
//!
//! [`FileFlash::in_ram`] is the same flash with no file: for a simulated
//! device whose queue is larger than `trygg_firmware::flash::MemFlash` can
//! hold (it lives on the stack and has at most 64 sectors).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a flash operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileFlashError {
    /// Outside the flash, or an erase not on sector boundaries. A bug in the
    /// caller: final.
    #[error("flash access outside its bounds or not sector-aligned")]
    OutOfBounds,
    /// A write tried to set a 0 bit back to 1: the sector needs an erase
    /// first. A bug in the caller: final.
    #[error("write over unerased flash")]
    NotErased,
    /// The file has another size than asked for: it was made for another
    /// layout. Final: move it away or pass the right size.
    #[error("{path}: {actual} bytes, expected {expected} (another flash layout?)")]
    WrongSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// The file system failed (full disk, I/O error): worth a retry.
    #[error("flash file: {0}")]
    Io(#[from] std::io::Error),
}

impl FileFlashError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FileFlashError::Io(_))
    }
}

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FileFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// `sectors` sectors of `SECTOR` bytes of NOR flash, in a file or in RAM.
pub struct FileFlash<const SECTOR: usize> {
    bytes: Vec<u8>,
    file: Option<File>,
    erases: u64,
}

impl<const SECTOR: usize> FileFlash<SECTOR> {
    /// Opens (or creates, erased) the flash file at `path`. Its directory
    /// must exist.
    pub fn open(path: &Path, sectors: usize) -> Result<Self, FileFlashError> {
        let size = (sectors * SECTOR) as u64;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let actual = file.metadata()?.len();
        let mut bytes = vec![0xFF; size as usize];
        if actual == 0 {
            file.write_all_at(&bytes, 0)?;
            file.sync_all()?;
            // The new file's directory entry, so a power cut cannot lose it.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        } else if actual != size {
            return Err(FileFlashError::WrongSize {
                path: path.to_path_buf(),
                expected: size,
                actual,
            });
        } else {
            file.read_exact(&mut bytes)?;
        }
        Ok(FileFlash {
            bytes,
            file: Some(file),
            erases: 0,
        })
    }

    /// Erased flash with no file behind it: lost when dropped.
    pub fn in_ram(sectors: usize) -> Self {
        FileFlash {
            bytes: vec![0xFF; sectors * SECTOR],
            file: None,
            erases: 0,
        }
    }

    /// Sector erases since it was opened (wear).
    pub fn erases(&self) -> u64 {
        self.erases
    }

    fn persist(&mut self, offset: usize, len: usize) -> Result<(), FileFlashError> {
        if let Some(file) = self.file.as_mut() {
            file.write_all_at(&self.bytes[offset..offset + len], offset as u64)?;
            file.sync_data()?;
        }
        Ok(())
    }
}

impl<const SECTOR: usize> ErrorType for FileFlash<SECTOR> {
    type Error = FileFlashError;
}

impl<const SECTOR: usize> ReadNorFlash for FileFlash<SECTOR> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FileFlashError> {
        let start = offset as usize;
        let src = self
            .bytes
            .get(start..start + bytes.len())
            .ok_or(FileFlashError::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl<const SECTOR: usize> NorFlash for FileFlash<SECTOR> {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FileFlashError> {
        let (from, to) = (from as usize, to as usize);
        if from % SECTOR != 0 || to % SECTOR != 0 || from > to || to > self.bytes.len() {
            return Err(FileFlashError::OutOfBounds);
        }
        self.bytes[from..to].fill(0xFF);
        self.erases += ((to - from) / SECTOR) as u64;
        self.persist(from, to - from)
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), FileFlashError> {
        let start = offset as usize;
        let dst = self
            .bytes
            .get_mut(start..start + data.len())
            .ok_or(FileFlashError::OutOfBounds)?;
        if dst.iter().zip(data).any(|(old, new)| new & !old != 0) {
            return Err(FileFlashError::NotErased);
        }
        dst.copy_from_slice(data);
        self.persist(start, data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trygg_firmware::flash::MemFlash;
    use trygg_firmware::store::Store;
    use trygg_protocol::{DeviceEvent, EventKind};

    const SECTOR: usize = 1024;

    fn event(seq: u64, kind: EventKind) -> DeviceEvent {
        DeviceEvent {
            seq,
            kind,
            ts: Some(1_763_860_000),
            battery: Some(80),
            value: None,
        }
    }

    #[test]
    fn a_new_file_is_erased_flash_of_the_asked_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.flash");
        let mut f = FileFlash::<SECTOR>::open(&path, 4).unwrap();
        assert_eq!(f.capacity(), 4 * SECTOR);
        let mut b = [0u8; 16];
        f.read(100, &mut b).unwrap();
        assert_eq!(b, [0xFF; 16]);
        assert_eq!(std::fs::read(&path).unwrap(), vec![0xFF; 4 * SECTOR]);
    }

    #[test]
    fn a_write_cannot_set_bits_without_an_erase() {
        let mut f = FileFlash::<SECTOR>::in_ram(2);
        f.write(0, &[0x0F]).unwrap();
        assert!(matches!(
            f.write(0, &[0xF0]),
            Err(FileFlashError::NotErased)
        ));
        // Clearing more bits is allowed.
        f.write(0, &[0x01]).unwrap();
        f.erase(0, SECTOR as u32).unwrap();
        f.write(0, &[0xF0]).unwrap();
        assert_eq!(f.erases(), 1);
    }

    #[test]
    fn an_erase_must_be_on_sector_boundaries_and_inside() {
        let mut f = FileFlash::<SECTOR>::in_ram(2);
        assert!(matches!(
            f.erase(1, SECTOR as u32),
            Err(FileFlashError::OutOfBounds)
        ));
        assert!(matches!(
            f.erase(0, 3 * SECTOR as u32),
            Err(FileFlashError::OutOfBounds)
        ));
        assert!(matches!(
            f.write(2 * SECTOR as u32 - 1, &[0, 0]),
            Err(FileFlashError::OutOfBounds)
        ));
    }

    #[test]
    fn writes_and_erases_are_in_the_file_when_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.flash");
        let mut f = FileFlash::<SECTOR>::open(&path, 2).unwrap();
        f.write(10, &[1, 2, 3]).unwrap();
        f.write(SECTOR as u32, &[0]).unwrap();
        // Another reader sees the bytes without `f` being dropped.
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[10..13], &[1, 2, 3]);
        assert_eq!(on_disk[SECTOR], 0);
        f.erase(0, SECTOR as u32).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[10..13], &[0xFF; 3]);
        assert_eq!(on_disk[SECTOR], 0);
        drop(f);
        let mut again = FileFlash::<SECTOR>::open(&path, 2).unwrap();
        let mut b = [0xAA; 1];
        again.read(SECTOR as u32, &mut b).unwrap();
        assert_eq!(b, [0]);
        // NOR rules hold across reopening too.
        assert!(matches!(
            again.write(SECTOR as u32, &[1]),
            Err(FileFlashError::NotErased)
        ));
    }

    #[test]
    fn a_file_of_another_size_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.flash");
        std::fs::write(&path, [0u8; 100]).unwrap();
        let err = FileFlash::<SECTOR>::open(&path, 2).err().unwrap();
        assert!(
            matches!(err, FileFlashError::WrongSize { actual: 100, .. }),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 100]);
    }

    #[test]
    fn the_store_keeps_its_queue_and_counter_across_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.flash");
        let (mut store, recovered) =
            Store::<_, 8>::open(FileFlash::<SECTOR>::open(&path, 4).unwrap(), 1000).unwrap();
        assert!(recovered.events.is_empty());
        let a = event(1000, EventKind::Motion);
        let b = event(1001, EventKind::ButtonPress);
        store.append_event(&a, core::iter::empty()).unwrap();
        store.append_event(&b, [a].into_iter()).unwrap();
        store.append_done(1000, [b].into_iter()).unwrap();
        // SIGKILL: nothing is flushed or closed on the way out.
        std::mem::forget(store);
        let (store, recovered) =
            Store::<_, 8>::open(FileFlash::<SECTOR>::open(&path, 4).unwrap(), 1).unwrap();
        assert_eq!(recovered.events.as_slice(), &[b]);
        assert!(store.next_seq() >= 1002);
    }

    #[test]
    fn it_agrees_with_the_firmware_mem_flash_byte_for_byte() {
        // The same operations on both flashes give the same contents and the
        // same refusals: FileFlash is MemFlash with a file behind it.
        let mut mem: MemFlash<{ 2 * SECTOR }, SECTOR> = MemFlash::new();
        let mut file = FileFlash::<SECTOR>::in_ram(2);
        let ops: [(u32, &[u8]); 5] = [
            (0, &[0xF0, 0x0F]),
            (1, &[0x0E]),
            (0, &[0x0F]),
            (SECTOR as u32 + 5, &[0, 1, 2]),
            (SECTOR as u32 + 5, &[0, 0, 0]),
        ];
        for (at, data) in ops {
            assert_eq!(mem.write(at, data).is_ok(), file.write(at, data).is_ok());
        }
        mem.erase(0, SECTOR as u32).unwrap();
        file.erase(0, SECTOR as u32).unwrap();
        let (mut a, mut b) = ([0u8; 2 * SECTOR], [0u8; 2 * SECTOR]);
        mem.read(0, &mut a).unwrap();
        file.read(0, &mut b).unwrap();
        assert_eq!(a, b);
    }
}
