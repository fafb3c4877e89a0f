//! The device's memory across power loss: the events not yet receipted and
//! the next sequence number, in a log on NOR flash.
//!
//! ## Format
//!
//! The flash (any [`NorFlash`], at least two sectors) is used as a ring of
//! sectors. Every record is [`RECORD`] = 64 bytes, ending in a CRC-32 of
//! the rest:
//!
//! - a **sector header** (tag `0x5E`) at offset 0: the sector's generation
//!   (one more than the sector before it) and the sequence counter when the
//!   sector was begun;
//! - an **event** (tag `0xE1`): sequence number, kind (by its wire name, so
//!   the flash outlives a reordered kind table), time, battery, value;
//! - a **done** record (tag `0xD1`): the event with this sequence number
//!   left the queue (receipted, or evicted for an alarm);
//! - a **reservation** (tag `0x5A`): sequence numbers below this one may
//!   have been handed out; the counter never goes below it again.
//!
//! Erased flash reads `0xFF`: the first `0xFF` tag ends a sector's log.
//!
//! ## What is durable when
//!
//! An event is written before it is ever sent, and its done record before
//! it leaves the queue, so after a power cut the newest sector, replayed,
//! gives back every event still awaiting its receipt. A sequence number is
//! never reused: the newest sector's header and records hold the highest one
//! handed out, and a reservation written at every start covers numbers
//! handed out while the flash was failing (see `Device`). Only the number of
//! an event whose write was torn by the power cut itself can come again:
//! the device died with it unsent.
//!
//! When the head sector is full the log moves on to the next sector: erases
//! it (only if it is not blank), copies the live events into it, and writes
//! its header **last**. Until that header is written the previous sector is
//! still the newest, complete one, so a cut during the move loses nothing.
//! Each move erases one sector, in turn: the wear is spread evenly, one
//! erase per sector per trip round the ring.
//!
//! A torn record (bad CRC) ends the replay of its sector; the log then
//! moves to a fresh sector at the next write, never writing after garbage.

use embedded_storage::nor_flash::NorFlash;
use heapless::Vec;
use trygg_protocol::{DeviceEvent, EventKind};

/// Bytes per record.
pub const RECORD: usize = 64;

const TAG_HEADER: u8 = 0x5E;
const TAG_EVENT: u8 = 0xE1;
const TAG_DONE: u8 = 0xD1;
const TAG_RESERVE: u8 = 0x5A;
const TAG_ERASED: u8 = 0xFF;
const CRC_AT: usize = RECORD - 4;
const NAME_AT: usize = 24;
const NAME_MAX: usize = CRC_AT - NAME_AT;

/// Why the store could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError<E> {
    /// The flash failed (worth a retry: it may be a brown-out).
    Flash(E),
    /// The flash does not suit: fewer than two sectors, a sector too small
    /// to hold the queue's capacity, or a write size that does not divide
    /// a record. Final: fix the board's configuration.
    Unsuitable,
}

/// What [`Store::open`] found.
#[derive(Debug)]
pub struct Recovered<const N: usize> {
    /// Events awaiting their receipt, oldest first.
    pub events: Vec<DeviceEvent, N>,
    /// A torn or corrupt record was found (and stepped over).
    pub torn: bool,
    /// Events that did not fit the queue (never expected: counted).
    pub overflow: u32,
}

/// The log. `N` is the capacity of the queue it backs.
pub struct Store<F: NorFlash, const N: usize> {
    flash: F,
    sectors: u32,
    sector_size: u32,
    head: u32,
    offset: u32,
    generation: u32,
    next_seq: u64,
    erases: u32,
}

impl<F: NorFlash, const N: usize> Store<F, N> {
    /// Opens the log on `flash`, replaying what it holds. A blank flash
    /// starts counting at `first_seq`.
    pub fn open(
        mut flash: F,
        first_seq: u64,
    ) -> Result<(Self, Recovered<N>), StoreError<F::Error>> {
        let sector_size = F::ERASE_SIZE as u32;
        let sectors = (flash.capacity() / F::ERASE_SIZE) as u32;
        if sectors < 2
            || F::ERASE_SIZE % RECORD != 0
            || !RECORD.is_multiple_of(F::WRITE_SIZE)
            || !RECORD.is_multiple_of(F::READ_SIZE)
            || F::ERASE_SIZE / RECORD < N + 2
        {
            return Err(StoreError::Unsuitable);
        }
        // The newest sector with a valid header.
        let mut newest: Option<(u32, u32, u64)> = None;
        for s in 0..sectors {
            let mut rec = [0u8; RECORD];
            flash
                .read(s * sector_size, &mut rec)
                .map_err(StoreError::Flash)?;
            if let Some((generation, seq)) = decode_header(&rec) {
                if newest.is_none_or(|(_, g, _)| generation.wrapping_sub(g) as i32 > 0) {
                    newest = Some((s, generation, seq));
                }
            }
        }
        let mut recovered = Recovered {
            events: Vec::new(),
            torn: false,
            overflow: 0,
        };
        let mut store = Store {
            flash,
            sectors,
            sector_size,
            head: sectors - 1,
            offset: sector_size,
            generation: 0,
            next_seq: first_seq,
            erases: 0,
        };
        let Some((head, generation, seq)) = newest else {
            store.rotate(core::iter::empty())?;
            return Ok((store, recovered));
        };
        store.head = head;
        store.generation = generation;
        store.next_seq = seq;
        let mut offset = RECORD as u32;
        while offset < sector_size {
            let mut rec = [0u8; RECORD];
            store
                .flash
                .read(head * sector_size + offset, &mut rec)
                .map_err(StoreError::Flash)?;
            if rec[0] == TAG_ERASED && rec.iter().all(|b| *b == 0xFF) {
                break;
            }
            match decode(&rec) {
                Some(Decoded::Event(ev)) => {
                    store.next_seq = store.next_seq.max(ev.seq.saturating_add(1));
                    if !recovered.events.iter().any(|e| e.seq == ev.seq)
                        && recovered.events.push(ev).is_err()
                    {
                        recovered.overflow += 1;
                    }
                }
                Some(Decoded::Reserve(seq)) => {
                    store.next_seq = store.next_seq.max(seq);
                }
                Some(Decoded::Done(seq)) => {
                    store.next_seq = store.next_seq.max(seq.saturating_add(1));
                    recovered.events.retain(|e| e.seq != seq);
                }
                None => {
                    // Torn: never write after it; the next write moves on.
                    recovered.torn = true;
                    offset = sector_size;
                    break;
                }
            }
            offset += RECORD as u32;
        }
        store.offset = offset;
        Ok((store, recovered))
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Sector erases this store did since it was opened (wear).
    pub fn erases(&self) -> u32 {
        self.erases
    }

    /// Gives the flash back.
    pub fn release(self) -> F {
        self.flash
    }

    /// Writes a new event with the next sequence number (which it takes).
    /// `live` is every event still queued (the new one not among them): if
    /// the log moves to a new sector, they are copied there.
    pub fn append_event<I>(
        &mut self,
        event: &DeviceEvent,
        live: I,
    ) -> Result<(), StoreError<F::Error>>
    where
        I: Iterator<Item = DeviceEvent> + Clone,
    {
        let mut rec = [0xFFu8; RECORD];
        encode_event(event, &mut rec);
        self.append(&rec, live)?;
        self.next_seq = self.next_seq.max(event.seq.saturating_add(1));
        Ok(())
    }

    /// Records that the event `seq` left the queue. `live` as for
    /// [`Store::append_event`] (it may still hold `seq`).
    pub fn append_done<I>(&mut self, seq: u64, live: I) -> Result<(), StoreError<F::Error>>
    where
        I: Iterator<Item = DeviceEvent> + Clone,
    {
        let mut rec = [0xFFu8; RECORD];
        rec[0] = TAG_DONE;
        rec[1..9].copy_from_slice(&seq.to_le_bytes());
        seal(&mut rec);
        self.append(&rec, live.filter(move |e| e.seq != seq))
    }

    /// Makes sure the counter never goes below `next_seq` again, even if
    /// later writes fail. `live` as for [`Store::append_event`].
    pub fn reserve<I>(&mut self, next_seq: u64, live: I) -> Result<(), StoreError<F::Error>>
    where
        I: Iterator<Item = DeviceEvent> + Clone,
    {
        let mut rec = [0xFFu8; RECORD];
        rec[0] = TAG_RESERVE;
        rec[1..9].copy_from_slice(&next_seq.to_le_bytes());
        seal(&mut rec);
        self.append(&rec, live)?;
        self.next_seq = self.next_seq.max(next_seq);
        Ok(())
    }

    fn append<I>(&mut self, rec: &[u8; RECORD], live: I) -> Result<(), StoreError<F::Error>>
    where
        I: Iterator<Item = DeviceEvent> + Clone,
    {
        if self.offset + RECORD as u32 > self.sector_size {
            self.rotate(live)?;
        }
        let at = self.head * self.sector_size + self.offset;
        // Whatever happens, never write this slot again.
        self.offset += RECORD as u32;
        self.flash.write(at, rec).map_err(StoreError::Flash)
    }

    /// Moves the log to the next sector, carrying `live` over.
    fn rotate<I>(&mut self, live: I) -> Result<(), StoreError<F::Error>>
    where
        I: Iterator<Item = DeviceEvent> + Clone,
    {
        let next = (self.head + 1) % self.sectors;
        let base = next * self.sector_size;
        if !self.is_blank(next)? {
            self.flash
                .erase(base, base + self.sector_size)
                .map_err(StoreError::Flash)?;
            self.erases += 1;
        }
        let mut offset = RECORD as u32;
        for ev in live {
            let mut rec = [0xFFu8; RECORD];
            encode_event(&ev, &mut rec);
            if offset + RECORD as u32 > self.sector_size {
                return Err(StoreError::Unsuitable);
            }
            self.flash
                .write(base + offset, &rec)
                .map_err(StoreError::Flash)?;
            offset += RECORD as u32;
        }
        let generation = self.generation.wrapping_add(1);
        let mut rec = [0xFFu8; RECORD];
        rec[0] = TAG_HEADER;
        rec[1..5].copy_from_slice(&generation.to_le_bytes());
        rec[5..13].copy_from_slice(&self.next_seq.to_le_bytes());
        seal(&mut rec);
        self.flash.write(base, &rec).map_err(StoreError::Flash)?;
        self.head = next;
        self.offset = offset;
        self.generation = generation;
        Ok(())
    }

    fn is_blank(&mut self, sector: u32) -> Result<bool, StoreError<F::Error>> {
        let mut rec = [0u8; RECORD];
        let mut offset = 0;
        while offset < self.sector_size {
            self.flash
                .read(sector * self.sector_size + offset, &mut rec)
                .map_err(StoreError::Flash)?;
            if rec.iter().any(|b| *b != 0xFF) {
                return Ok(false);
            }
            offset += RECORD as u32;
        }
        Ok(true)
    }
}

enum Decoded {
    Event(DeviceEvent),
    Done(u64),
    Reserve(u64),
}

fn seal(rec: &mut [u8; RECORD]) {
    let crc = crc32(&rec[..CRC_AT]);
    rec[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
}

fn sealed(rec: &[u8; RECORD]) -> bool {
    rec[CRC_AT..] == crc32(&rec[..CRC_AT]).to_le_bytes()
}

fn decode_header(rec: &[u8; RECORD]) -> Option<(u32, u64)> {
    if rec[0] != TAG_HEADER || !sealed(rec) {
        return None;
    }
    Some((
        u32::from_le_bytes(rec[1..5].try_into().ok()?),
        u64::from_le_bytes(rec[5..13].try_into().ok()?),
    ))
}

fn encode_event(ev: &DeviceEvent, rec: &mut [u8; RECORD]) {
    rec[0] = TAG_EVENT;
    rec[1..9].copy_from_slice(&ev.seq.to_le_bytes());
    let mut flags = 0u8;
    if let Some(ts) = ev.ts {
        flags |= 1;
        rec[11..19].copy_from_slice(&ts.to_le_bytes());
    }
    if let Some(b) = ev.battery {
        flags |= 2;
        rec[10] = b;
    }
    if let Some(v) = ev.value {
        flags |= 4;
        rec[19..23].copy_from_slice(&v.to_bits().to_le_bytes());
    }
    rec[9] = flags;
    let name = ev.kind.wire().as_bytes();
    // Wire names are short ASCII; the table's test keeps them under NAME_MAX.
    let n = name.len().min(NAME_MAX - 1);
    rec[23] = n as u8;
    rec[NAME_AT..NAME_AT + n].copy_from_slice(&name[..n]);
    seal(rec);
}

fn decode(rec: &[u8; RECORD]) -> Option<Decoded> {
    if !sealed(rec) {
        return None;
    }
    let seq = u64::from_le_bytes(rec[1..9].try_into().ok()?);
    match rec[0] {
        TAG_DONE => Some(Decoded::Done(seq)),
        TAG_RESERVE => Some(Decoded::Reserve(seq)),
        TAG_EVENT => {
            let flags = rec[9];
            let n = rec[23] as usize;
            let name = core::str::from_utf8(rec.get(NAME_AT..NAME_AT + n)?).ok()?;
            Some(Decoded::Event(DeviceEvent {
                seq,
                kind: EventKind::from_wire(name)?,
                ts: (flags & 1 != 0)
                    .then(|| u64::from_le_bytes(rec[11..19].try_into().unwrap_or_default())),
                battery: (flags & 2 != 0).then_some(rec[10]),
                value: (flags & 4 != 0).then(|| {
                    f32::from_bits(u32::from_le_bytes(
                        rec[19..23].try_into().unwrap_or_default(),
                    ))
                }),
            }))
        }
        _ => None,
    }
}

/// CRC-32 (IEEE 802.3), bitwise: small code over speed for 60-byte records.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= *b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::MemFlash;

    type Flash = MemFlash<{ 3 * 1024 }, 1024>;

    fn ev(seq: u64, kind: EventKind) -> DeviceEvent {
        DeviceEvent {
            seq,
            kind,
            ts: Some(1_763_860_000 + seq),
            battery: Some(80),
            value: (kind == EventKind::Temperature).then_some(21.5),
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn every_wire_name_fits_a_record() {
        for k in trygg_protocol::kinds::TABLE {
            assert!(k.wire.len() < NAME_MAX, "{}", k.wire);
        }
    }

    #[test]
    fn a_blank_flash_starts_at_the_first_seq() {
        let (s, r) = Store::<_, 4>::open(Flash::new(), 100).unwrap();
        assert_eq!(s.next_seq(), 100);
        assert!(r.events.is_empty() && !r.torn);
    }

    #[test]
    fn unreceipted_events_come_back_after_a_restart_and_done_ones_do_not() {
        let (mut s, _) = Store::<_, 4>::open(Flash::new(), 1).unwrap();
        let a = ev(1, EventKind::ButtonPress);
        let b = ev(2, EventKind::Temperature);
        s.append_event(&a, core::iter::empty()).unwrap();
        s.append_event(&b, [a].into_iter()).unwrap();
        s.append_done(1, [a, b].into_iter()).unwrap();
        let (s, r) = Store::<_, 4>::open(s.release(), 1).unwrap();
        assert_eq!(r.events.as_slice(), &[b]);
        assert_eq!(s.next_seq(), 3);
    }

    #[test]
    fn moving_to_a_new_sector_carries_live_events_and_erases_in_turn() {
        let (mut s, _) = Store::<_, 4>::open(Flash::new(), 1).unwrap();
        let mut live: std::vec::Vec<DeviceEvent> = std::vec::Vec::new();
        // 1 KiB sectors hold 15 records after the header: go round many times.
        for seq in 1..=200u64 {
            let e = ev(seq, EventKind::Motion);
            s.append_event(&e, live.iter().copied()).unwrap();
            live.push(e);
            if live.len() > 2 {
                let done = live.remove(0);
                s.append_done(done.seq, live.iter().copied().chain([done]))
                    .unwrap();
            }
        }
        let erases = s.erases();
        let mut flash = s.release();
        let counts = flash.erase_counts().to_vec();
        assert!(erases > 10, "{erases}");
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "wear is even: {counts:?}"
        );
        flash.power_on();
        let (s, r) = Store::<_, 4>::open(flash, 1).unwrap();
        assert_eq!(r.events.as_slice(), live.as_slice());
        assert_eq!(s.next_seq(), 201);
    }

    #[test]
    fn a_torn_record_is_stepped_over_and_never_written_after() {
        let (mut s, _) = Store::<_, 4>::open(Flash::new(), 1).unwrap();
        let a = ev(1, EventKind::Fall);
        s.append_event(&a, core::iter::empty()).unwrap();
        let mut flash = s.release();
        flash.cut_power_after(10);
        let (mut s, _) = Store::<_, 4>::open(flash, 1).unwrap();
        assert!(s
            .append_event(&ev(2, EventKind::Motion), [a].into_iter())
            .is_err());
        let mut flash = s.release();
        flash.power_on();
        let (mut s, r) = Store::<_, 4>::open(flash, 1).unwrap();
        assert!(r.torn);
        assert_eq!(r.events.as_slice(), &[a]);
        // The next write goes to a fresh sector, the alarm carried along.
        s.append_event(&ev(2, EventKind::Motion), [a].into_iter())
            .unwrap();
        let (_, r) = Store::<_, 4>::open(s.release(), 1).unwrap();
        assert!(!r.torn);
        assert_eq!(r.events.len(), 2);
    }

    #[test]
    fn a_sector_move_cut_before_its_header_keeps_the_old_sector() {
        let (mut s, _) = Store::<_, 4>::open(Flash::new(), 1).unwrap();
        let a = ev(1, EventKind::ButtonPress);
        s.append_event(&a, core::iter::empty()).unwrap();
        // Fill the sector with telemetry that is done at once.
        let mut seq = 2;
        while s.offset + RECORD as u32 <= s.sector_size {
            let e = ev(seq, EventKind::Motion);
            s.append_event(&e, [a].into_iter()).unwrap();
            if s.offset + RECORD as u32 <= s.sector_size {
                s.append_done(seq, [a, e].into_iter()).unwrap();
            }
            seq += 1;
        }
        let before = seq;
        let mut flash = s.release();
        // The move copies the two live events then writes the header:
        // cut after the copies.
        flash.cut_power_after(2 * RECORD);
        let (mut s, r) = Store::<_, 4>::open(flash, 1).unwrap();
        let live: std::vec::Vec<DeviceEvent> = r.events.iter().copied().collect();
        assert!(s.append_done(before - 1, live.iter().copied()).is_err());
        let mut flash = s.release();
        flash.power_on();
        let (s, r) = Store::<_, 4>::open(flash, 1).unwrap();
        assert_eq!(r.events.as_slice(), live.as_slice());
        assert_eq!(s.next_seq(), before);
    }

    #[test]
    fn a_flash_too_small_for_the_queue_is_refused() {
        assert!(matches!(
            Store::<_, 32>::open(Flash::new(), 1),
            Err(StoreError::Unsuitable)
        ));
        assert!(matches!(
            Store::<_, 4>::open(MemFlash::<1024, 1024>::new(), 1),
            Err(StoreError::Unsuitable)
        ));
    }
}
