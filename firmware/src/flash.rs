//! Flash memory in RAM, with NOR flash's rules enforced: a write may only
//! turn bits from 1 to 0, an erase sets a whole sector back to `0xFF`.
//!
//! Used by host tests, by the simulator's devices (which have no flash) and
//! by the Cortex-M self-test. It can be told to lose power in the middle of
//! a write ([`MemFlash::cut_power_after`]): the bytes written until then
//! stay, the rest of that write and every later one fail, as on a device
//! whose supply dropped.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Why a flash operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemFlashError {
    /// Outside the flash, or not aligned to the sector for an erase.
    OutOfBounds,
    /// A write tried to turn a 0 bit back into 1 (the sector needs an erase).
    NotErased,
    /// The power was cut (see [`MemFlash::cut_power_after`]).
    PowerCut,
}

impl NorFlashError for MemFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            MemFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            MemFlashError::NotErased | MemFlashError::PowerCut => NorFlashErrorKind::Other,
        }
    }
}

/// `SIZE` bytes of NOR flash in sectors of `SECTOR` bytes.
pub struct MemFlash<const SIZE: usize, const SECTOR: usize> {
    bytes: [u8; SIZE],
    erases: [u32; 64],
    /// Bytes that may still be written before the power goes.
    budget: Option<usize>,
}

impl<const SIZE: usize, const SECTOR: usize> Default for MemFlash<SIZE, SECTOR> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SIZE: usize, const SECTOR: usize> MemFlash<SIZE, SECTOR> {
    /// Erased flash. At most 64 sectors.
    pub const fn new() -> Self {
        assert!(SIZE.is_multiple_of(SECTOR) && SIZE / SECTOR <= 64);
        MemFlash {
            bytes: [0xFF; SIZE],
            erases: [0; 64],
            budget: None,
        }
    }

    /// After `bytes` more bytes are written, the power goes: that write is
    /// torn there, and every later write or erase fails, until
    /// [`MemFlash::power_on`].
    pub fn cut_power_after(&mut self, bytes: usize) {
        self.budget = Some(bytes);
    }

    /// The supply is back; what was written stays.
    pub fn power_on(&mut self) {
        self.budget = None;
    }

    /// How often each sector was erased (wear).
    pub fn erase_counts(&self) -> &[u32] {
        &self.erases[..SIZE / SECTOR]
    }

    /// The raw contents, to damage on purpose in tests.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl<const SIZE: usize, const SECTOR: usize> ErrorType for MemFlash<SIZE, SECTOR> {
    type Error = MemFlashError;
}

impl<const SIZE: usize, const SECTOR: usize> ReadNorFlash for MemFlash<SIZE, SECTOR> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), MemFlashError> {
        let start = offset as usize;
        let src = self
            .bytes
            .get(start..start + bytes.len())
            .ok_or(MemFlashError::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl<const SIZE: usize, const SECTOR: usize> NorFlash for MemFlash<SIZE, SECTOR> {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), MemFlashError> {
        let (from, to) = (from as usize, to as usize);
        if from % SECTOR != 0 || to % SECTOR != 0 || from > to || to > SIZE {
            return Err(MemFlashError::OutOfBounds);
        }
        if self.budget.is_some() {
            // An erase under failing power: say it did nothing.
            return Err(MemFlashError::PowerCut);
        }
        self.bytes[from..to].fill(0xFF);
        for s in from / SECTOR..to / SECTOR {
            self.erases[s] += 1;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), MemFlashError> {
        let start = offset as usize;
        let dst = self
            .bytes
            .get_mut(start..start + data.len())
            .ok_or(MemFlashError::OutOfBounds)?;
        if dst.iter().zip(data).any(|(old, new)| new & !old != 0) {
            return Err(MemFlashError::NotErased);
        }
        let n = match self.budget {
            Some(b) => b.min(data.len()),
            None => data.len(),
        };
        dst[..n].copy_from_slice(&data[..n]);
        if let Some(b) = self.budget.as_mut() {
            *b -= n;
            if n < data.len() || *b == 0 {
                self.budget = Some(0);
                if n < data.len() {
                    return Err(MemFlashError::PowerCut);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_cannot_set_bits_without_an_erase() {
        let mut f: MemFlash<256, 128> = MemFlash::new();
        f.write(0, &[0x0F]).unwrap();
        assert_eq!(f.write(0, &[0xF0]), Err(MemFlashError::NotErased));
        f.write(0, &[0x01]).unwrap();
        f.erase(0, 128).unwrap();
        f.write(0, &[0xF0]).unwrap();
        assert_eq!(f.erase_counts(), &[1, 0]);
    }

    #[test]
    fn a_power_cut_tears_the_write_where_it_falls() {
        let mut f: MemFlash<256, 128> = MemFlash::new();
        f.cut_power_after(3);
        assert_eq!(f.write(0, &[1, 2, 3, 4, 5]), Err(MemFlashError::PowerCut));
        assert_eq!(f.write(10, &[1]), Err(MemFlashError::PowerCut));
        f.power_on();
        let mut b = [0u8; 5];
        f.read(0, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 0xFF, 0xFF]);
    }
}
