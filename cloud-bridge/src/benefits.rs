//! Benefits, measured: the figures a municipality needs to show that the
//! service works, per unit and period (`GET /benefits`,
//! `GET /console/api/benefits`, `docs/console.md`).
//!
//! What is counted, and how:
//! - the **period** is whole days in Norwegian time (Europe/Oslo, with the
//!   EU summer-time rule), from the first day's midnight to the midnight
//!   after the last day; at most [`MAX_DAYS`]; an alarm belongs to the
//!   period it was **raised** in;
//! - **time to acknowledge** and **time to close** (median and p90, in
//!   seconds, nearest-rank p90) are for care alarms (alarm and medication
//!   kinds) acted on by a person: what the system itself cleared (`trygg`)
//!   says nothing of the service's response;
//! - **alarms per kind and day**: every alarm raised, care and technical;
//! - the **false-alarm share**: care alarms closed with cause `false`,
//!   of all care alarms closed (with or without a cause); the count per
//!   cause is given beside it so the basis is plain;
//! - **uptime** of a device (gateway): the share of the period, from when
//!   the bridge first heard of it, not covered by a `device_silent`
//!   (`gateway_offline`) alarm of it, counted from when the alarm was
//!   raised until it was closed (or until now, or the period's end). The
//!   silence before the alarm (the detection period) is not counted, so
//!   uptime is a little high by that margin. The mean is over the devices
//!   (gateways) listed.
//!
//! [`compute`] is pure (alarms, devices, gateways and the clock passed in);
//! [`gather`] reads them from the store for a [`Scope`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use trygg_protocol::{Category, EventKind};

use crate::alarm::{Alarm, AlarmState, Cause, SYSTEM_ACTOR};
use crate::store::{Store, StoreError};

/// The longest period, in days.
pub const MAX_DAYS: i64 = 366;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// A civil date (Norwegian time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let s = s.trim();
        let mut it = s.splitn(3, '-');
        let (y, m, d) = (it.next()?, it.next()?, it.next()?);
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        let date = Date {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
            day: d.parse().ok()?,
        };
        (date.month >= 1 && date.month <= 12 && date.day >= 1 && date.day <= days_in_month(date))
            .then_some(date)
    }

    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    pub fn days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let m = i64::from(self.month);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// The day after.
    pub fn next(self) -> Date {
        Date::from_days(self.days() + 1)
    }

    /// The day `utc_ms` falls on in Norway.
    pub fn of_ms(utc_ms: u64) -> Date {
        let ms = utc_ms as i64;
        Date::from_days((ms + oslo_offset_ms(ms)).div_euclid(DAY_MS))
    }

    /// Midnight at the start of this day in Norway, as Unix ms (0 before
    /// 1970).
    pub fn start_ms(self) -> u64 {
        let local = self.days() * DAY_MS;
        // The clocks change at 01:00 UTC (02:00 or 03:00 local), never
        // near midnight, so the offset an hour either side is the same.
        let utc = local - oslo_offset_ms(local - HOUR_MS);
        utc.max(0) as u64
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn days_in_month(d: Date) -> u32 {
    let next = if d.month == 12 {
        Date {
            year: d.year + 1,
            month: 1,
            day: 1,
        }
    } else {
        Date {
            year: d.year,
            month: d.month + 1,
            day: 1,
        }
    };
    let first = Date { day: 1, ..d };
    (next.days() - first.days()) as u32
}

/// The last Sunday of `month` in `year`, 01:00 UTC, as Unix ms.
fn last_sunday_0100_utc(year: i32, month: u32) -> i64 {
    let last = Date {
        year,
        month,
        day: days_in_month(Date {
            year,
            month,
            day: 1,
        }),
    }
    .days();
    // 1970-01-01 was a Thursday: (days + 4) % 7 == 0 on Sundays.
    let sunday = last - (last + 4).rem_euclid(7);
    sunday * DAY_MS + HOUR_MS
}

/// Norway's offset from UTC at `utc_ms`: +2 h in summer time (the EU rule:
/// last Sunday of March to last Sunday of October, at 01:00 UTC), else +1 h.
pub fn oslo_offset_ms(utc_ms: i64) -> i64 {
    let year = Date::from_days(utc_ms.div_euclid(DAY_MS)).year;
    let summer = last_sunday_0100_utc(year, 3) <= utc_ms && utc_ms < last_sunday_0100_utc(year, 10);
    if summer {
        2 * HOUR_MS
    } else {
        HOUR_MS
    }
}

/// Whole days, `from` to `to` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from: Date,
    pub to: Date,
}

/// Why a period was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("{0:?} is not a date: use YYYY-MM-DD")]
    BadDate(String),
    #[error("the period ends before it begins")]
    Backwards,
    #[error("the period is longer than {MAX_DAYS} days")]
    TooLong,
}

impl Period {
    /// From the form's `from` and `to` (either may be empty): by default the
    /// 30 days up to and including today.
    pub fn parse(from: Option<&str>, to: Option<&str>, now_ms: u64) -> Result<Period, PeriodError> {
        let date = |s: Option<&str>| -> Result<Option<Date>, PeriodError> {
            match s.map(str::trim).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(s) => Date::parse(s)
                    .map(Some)
                    .ok_or_else(|| PeriodError::BadDate(s.chars().take(40).collect())),
            }
        };
        let to = date(to)?.unwrap_or_else(|| Date::of_ms(now_ms));
        let from = date(from)?.unwrap_or_else(|| Date::from_days(to.days() - 29));
        let p = Period { from, to };
        if to < from {
            return Err(PeriodError::Backwards);
        }
        if p.days() > MAX_DAYS {
            return Err(PeriodError::TooLong);
        }
        Ok(p)
    }

    pub fn days(&self) -> i64 {
        self.to.days() - self.from.days() + 1
    }

    pub fn start_ms(&self) -> u64 {
        self.from.start_ms()
    }

    /// The midnight after the last day.
    pub fn end_ms(&self) -> u64 {
        self.to.next().start_ms()
    }

    pub fn contains_ms(&self, ms: u64) -> bool {
        self.start_ms() <= ms && ms < self.end_ms()
    }
}

/// Median and p90 of some durations, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stat {
    pub count: usize,
    pub median_s: Option<f64>,
    pub p90_s: Option<f64>,
}

impl Stat {
    /// From durations in milliseconds.
    pub fn of(mut ms: Vec<u64>) -> Stat {
        ms.sort_unstable();
        let n = ms.len();
        if n == 0 {
            return Stat::default();
        }
        let s = |v: u64| (v as f64 / 100.0).round() / 10.0;
        let median = if n % 2 == 1 {
            s(ms[n / 2])
        } else {
            ((s(ms[n / 2 - 1]) + s(ms[n / 2])) / 2.0 * 10.0).round() / 10.0
        };
        // Nearest rank: the smallest value with at least 90 % at or below.
        let rank = (n * 9).div_ceil(10).max(1);
        Stat {
            count: n,
            median_s: Some(median),
            p90_s: Some(s(ms[rank - 1])),
        }
    }
}

/// One device's or gateway's uptime.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Uptime {
    pub id: String,
    pub gateway: String,
    /// Share of the time counted, 0 to 1.
    pub uptime: f64,
    /// Seconds covered by a silent/offline alarm.
    pub down_s: u64,
    /// Seconds counted (the period, from when it was first heard of, until
    /// now).
    pub counted_s: u64,
    /// How many silent/offline alarms touched the period.
    pub outages: usize,
}

/// A device the figures count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRef {
    pub gateway: String,
    pub device: String,
    /// When the bridge first heard of it (Unix ms); 0 when unknown.
    pub first_ms: u64,
}

/// Everything the benefits page and JSON show.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// The unit asked for; `None`: every unit the user may see.
    pub unit: Option<String>,
    pub from: Date,
    pub to: Date,
    pub from_ms: u64,
    pub to_ms: u64,
    pub days: i64,
    /// Alarms raised in the period (care and technical).
    pub alarms: usize,
    pub care_alarms: usize,
    pub technical_alarms: usize,
    /// Care alarms, acknowledged by a person: raised to acknowledged.
    pub time_to_acknowledge: Stat,
    /// Care alarms, closed by a person: raised to closed.
    pub time_to_close: Stat,
    /// Alarms per kind (wire name).
    pub per_kind: BTreeMap<String, usize>,
    /// Alarms per day (`YYYY-MM-DD`, every day of the period) and kind.
    pub per_day: BTreeMap<String, BTreeMap<String, usize>>,
    /// Care alarms closed, and how many with each cause (`none`: not said).
    pub care_closed: usize,
    pub causes: BTreeMap<String, usize>,
    /// Care alarms closed with cause `false`, of those closed.
    pub false_alarm_share: Option<f64>,
    pub devices: Vec<Uptime>,
    pub device_uptime_mean: Option<f64>,
    pub gateways: Vec<Uptime>,
    pub gateway_uptime_mean: Option<f64>,
}

fn is_care(kind: EventKind) -> bool {
    matches!(kind.category(), Category::Alarm | Category::Medication)
}

/// The figures for `alarms` (already limited to the unit asked for),
/// `devices` and `gateways` over `period`, as of `now_ms`.
pub fn compute(
    unit: Option<String>,
    alarms: &[Alarm],
    devices: &[DeviceRef],
    gateways: &[String],
    period: Period,
    now_ms: u64,
) -> Figures {
    let (start, end) = (period.start_ms(), period.end_ms());
    let raised: Vec<&Alarm> = alarms
        .iter()
        .filter(|a| period.contains_ms(a.raised_ms))
        .collect();
    let care: Vec<&Alarm> = raised.iter().copied().filter(|a| is_care(a.kind)).collect();
    let by_person = |by: &Option<String>| by.as_deref().is_some_and(|b| b != SYSTEM_ACTOR);
    let time_to_acknowledge = Stat::of(
        care.iter()
            .filter(|a| by_person(&a.acknowledged_by))
            .filter_map(|a| a.acknowledged_ms.map(|t| t.saturating_sub(a.raised_ms)))
            .collect(),
    );
    let time_to_close = Stat::of(
        care.iter()
            .filter(|a| a.state == AlarmState::Closed && by_person(&a.closed_by))
            .filter_map(|a| a.closed_ms.map(|t| t.saturating_sub(a.raised_ms)))
            .collect(),
    );
    let mut per_kind = BTreeMap::new();
    let mut per_day: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut d = period.from;
    while d <= period.to {
        per_day.insert(d.to_string(), BTreeMap::new());
        d = d.next();
    }
    for a in &raised {
        let kind = a.kind.wire().to_string();
        *per_kind.entry(kind.clone()).or_insert(0) += 1;
        *per_day
            .entry(Date::of_ms(a.raised_ms).to_string())
            .or_default()
            .entry(kind)
            .or_insert(0) += 1;
    }
    let closed: Vec<&&Alarm> = care
        .iter()
        .filter(|a| a.state == AlarmState::Closed)
        .collect();
    let mut causes: BTreeMap<String, usize> = Cause::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), 0))
        .collect();
    causes.insert("none".into(), 0);
    for a in &closed {
        let key = a.cause.map_or("none", Cause::as_str);
        *causes.entry(key.to_string()).or_insert(0) += 1;
    }
    let false_alarm_share = (!closed.is_empty()).then(|| {
        share(
            causes.get("false").copied().unwrap_or(0) as u64,
            closed.len() as u64,
        )
    });

    let counted_end = end.min(now_ms.max(start));
    let uptime_of = |id: &str, gateway: &str, first_ms: u64, kind: EventKind| -> Uptime {
        let from = start.max(first_ms).min(counted_end);
        let spans: Vec<(u64, u64)> = alarms
            .iter()
            .filter(|a| a.kind == kind && a.device == id && a.gateway == gateway)
            .map(|a| (a.raised_ms, a.closed_ms.unwrap_or(u64::MAX)))
            .filter(|(s, e)| *s < counted_end && *e > from)
            .collect();
        let down = covered(&spans, from, counted_end);
        let counted = counted_end - from;
        Uptime {
            id: id.to_string(),
            gateway: gateway.to_string(),
            uptime: if counted == 0 {
                1.0
            } else {
                share(counted - down, counted)
            },
            down_s: down / 1000,
            counted_s: counted / 1000,
            outages: spans.len(),
        }
    };
    let mut device_list: BTreeSet<(String, String, u64)> = devices
        .iter()
        .map(|d| (d.gateway.clone(), d.device.clone(), d.first_ms))
        .collect();
    // A device silent since before anything it sent was kept still counts.
    for a in alarms.iter().filter(|a| a.kind == EventKind::DeviceSilent) {
        if !device_list
            .iter()
            .any(|(g, d, _)| *g == a.gateway && *d == a.device)
        {
            device_list.insert((a.gateway.clone(), a.device.clone(), 0));
        }
    }
    let devices: Vec<Uptime> = device_list
        .iter()
        .map(|(g, d, first)| uptime_of(d, g, *first, EventKind::DeviceSilent))
        .collect();
    let mut gateway_list: BTreeSet<String> = gateways.iter().cloned().collect();
    for a in alarms
        .iter()
        .filter(|a| a.kind == EventKind::GatewayOffline)
    {
        gateway_list.insert(a.gateway.clone());
    }
    let gateways: Vec<Uptime> = gateway_list
        .iter()
        .map(|g| uptime_of(g, g, 0, EventKind::GatewayOffline))
        .collect();
    let mean = |v: &[Uptime]| {
        (!v.is_empty()).then(|| round4(v.iter().map(|u| u.uptime).sum::<f64>() / v.len() as f64))
    };
    Figures {
        unit,
        from: period.from,
        to: period.to,
        from_ms: start,
        to_ms: end,
        days: period.days(),
        alarms: raised.len(),
        care_alarms: care.len(),
        technical_alarms: raised.len() - care.len(),
        time_to_acknowledge,
        time_to_close,
        per_kind,
        per_day,
        care_closed: closed.len(),
        causes,
        false_alarm_share,
        device_uptime_mean: mean(&devices),
        devices,
        gateway_uptime_mean: mean(&gateways),
        gateways,
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    round4(part as f64 / whole as f64)
}

/// How much of `[from, to)` the spans cover, in ms (overlaps counted once).
fn covered(spans: &[(u64, u64)], from: u64, to: u64) -> u64 {
    let mut clipped: Vec<(u64, u64)> = spans
        .iter()
        .map(|(s, e)| ((*s).max(from), (*e).min(to)))
        .filter(|(s, e)| s < e)
        .collect();
    clipped.sort_unstable();
    let mut total = 0;
    let mut reach = from;
    for (s, e) in clipped {
        let s = s.max(reach);
        if e > s {
            total += e - s;
            reach = e;
        }
    }
    total
}

/// Whose figures: every unit, or some.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every alarm, including those of no unit.
    All,
    Units(Vec<String>),
}

impl Scope {
    fn admits(&self, unit: Option<&str>) -> bool {
        match self {
            Scope::All => true,
            Scope::Units(units) => unit.is_some_and(|u| units.iter().any(|x| x == u)),
        }
    }
}

/// The unit a device or gateway belongs to, by the same rule as its alarms
/// (the resident's unit, else the gateway's).
fn unit_for(
    store: &Store,
    gateway: &str,
    resident: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let probe = Alarm::raise(
        0,
        crate::alarm::NewAlarm {
            event_id: String::new(),
            gateway: gateway.to_string(),
            device: String::new(),
            device_seq: 0,
            kind: EventKind::DeviceSilent,
            resident: resident.map(str::to_string),
            room: None,
            detail: None,
            gateway_committed_ms: None,
            device_ts: None,
        },
        0,
    );
    store.unit_of(&probe)
}

/// Reads what the figures need from the store and computes them.
/// `technical_only`: a technician's view (no care alarms).
pub fn gather(
    store: &Store,
    scope: &Scope,
    unit: Option<String>,
    technical_only: bool,
    period: Period,
    now_ms: u64,
) -> Result<Figures, StoreError> {
    let mut alarms = Vec::new();
    for a in store.alarms(None)? {
        if technical_only && a.kind.category() != Category::Technical {
            continue;
        }
        if scope.admits(store.unit_of(&a)?.as_deref()) {
            alarms.push(a);
        }
    }
    let mut devices = Vec::new();
    for d in store.devices()? {
        if scope.admits(unit_for(store, &d.gateway, d.resident.as_deref())?.as_deref()) {
            devices.push(DeviceRef {
                gateway: d.gateway,
                device: d.device,
                first_ms: d.first_ms,
            });
        }
    }
    let mut gateways = Vec::new();
    for (g, _) in store.gateways()? {
        if scope.admits(unit_for(store, &g, None)?.as_deref()) {
            gateways.push(g);
        }
    }
    Ok(compute(unit, &alarms, &devices, &gateways, period, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::NewAlarm;

    fn date(s: &str) -> Date {
        Date::parse(s).unwrap()
    }

    fn period(from: &str, to: &str) -> Period {
        Period {
            from: date(from),
            to: date(to),
        }
    }

    /// An alarm of `kind` on `device`, raised at `raised_ms`.
    fn alarm(id: u64, kind: EventKind, device: &str, raised_ms: u64) -> Alarm {
        Alarm::raise(
            id,
            NewAlarm {
                event_id: format!("gw-1/{device}/{id}"),
                gateway: "gw-1".into(),
                device: device.into(),
                device_seq: id,
                kind,
                resident: None,
                room: None,
                detail: None,
                gateway_committed_ms: None,
                device_ts: None,
            },
            raised_ms,
        )
    }

    fn handled(mut a: Alarm, ack_after_s: u64, close_after_s: u64, cause: Cause) -> Alarm {
        let t = a.raised_ms;
        a.acknowledge("kari", t + ack_after_s * 1000).unwrap();
        a.close("kari", Some("done"), Some(cause), t + close_after_s * 1000)
            .unwrap();
        a
    }

    #[test]
    fn dates_round_trip_and_norwegian_midnight_follows_summer_time() {
        for s in ["1970-01-01", "2024-02-29", "2025-12-31", "2000-03-01"] {
            assert_eq!(Date::from_days(date(s).days()).to_string(), s);
        }
        assert_eq!(Date::parse("2025-02-29"), None);
        assert_eq!(Date::parse("2025-1-01"), None);
        assert_eq!(Date::parse("<script>"), None);
        // Winter: midnight is 23:00 UTC the day before; summer: 22:00.
        assert_eq!(date("2025-01-15").start_ms(), 1_736_895_600_000);
        assert_eq!(date("2025-07-15").start_ms(), 1_752_530_400_000);
        // 2025: summer time from 30 March 01:00 UTC to 26 October 01:00 UTC.
        assert_eq!(oslo_offset_ms(1_743_296_400_000 - 1), HOUR_MS);
        assert_eq!(oslo_offset_ms(1_743_296_400_000), 2 * HOUR_MS);
        assert_eq!(oslo_offset_ms(1_761_440_400_000 - 1), 2 * HOUR_MS);
        assert_eq!(oslo_offset_ms(1_761_440_400_000), HOUR_MS);
        // 23:30 UTC on 14 January is already the 15th in Norway.
        assert_eq!(Date::of_ms(1_736_897_400_000).to_string(), "2025-01-15");
    }

    #[test]
    fn a_period_defaults_to_thirty_days_and_refuses_nonsense() {
        let now = date("2025-03-10").start_ms() + 5 * HOUR_MS as u64;
        let p = Period::parse(None, None, now).unwrap();
        assert_eq!(
            (p.from.to_string(), p.to.to_string()),
            ("2025-02-09".into(), "2025-03-10".into())
        );
        assert_eq!(p.days(), 30);
        assert_eq!(
            Period::parse(Some("2025-03-10"), Some("2025-03-01"), now),
            Err(PeriodError::Backwards)
        );
        assert_eq!(
            Period::parse(Some("2020-01-01"), Some("2025-01-01"), now),
            Err(PeriodError::TooLong)
        );
        assert!(matches!(
            Period::parse(Some("yesterday"), None, now),
            Err(PeriodError::BadDate(_))
        ));
        assert_eq!(Period::parse(Some(""), Some(" "), now).unwrap(), p);
    }

    #[test]
    fn median_and_p90_use_nearest_rank() {
        let s = Stat::of((1..=10).map(|x| x * 1000).collect());
        assert_eq!((s.count, s.median_s, s.p90_s), (10, Some(5.5), Some(9.0)));
        let s = Stat::of(vec![30_000, 10_000, 20_000]);
        assert_eq!((s.median_s, s.p90_s), (Some(20.0), Some(30.0)));
        assert_eq!(Stat::of(vec![]), Stat::default());
        assert_eq!(Stat::of(vec![1234]).median_s, Some(1.2));
    }

    #[test]
    fn response_times_count_care_alarms_handled_by_people_in_the_period() {
        let p = period("2025-01-01", "2025-01-31");
        let t = date("2025-01-10").start_ms();
        let alarms = vec![
            handled(
                alarm(1, EventKind::ButtonPress, "b1", t),
                30,
                600,
                Cause::Real,
            ),
            handled(
                alarm(2, EventKind::Fall, "f1", t + 1000),
                90,
                1200,
                Cause::False,
            ),
            handled(
                alarm(3, EventKind::ButtonPress, "b1", t + 2000),
                60,
                300,
                Cause::Test,
            ),
            // Technical, and cleared by the system: not a response time.
            {
                let mut a = alarm(4, EventKind::DeviceSilent, "b1", t);
                a.clear("heard again", t + 5000);
                a
            },
            // Outside the period.
            handled(
                alarm(
                    5,
                    EventKind::ButtonPress,
                    "b1",
                    date("2025-02-01").start_ms(),
                ),
                1,
                2,
                Cause::False,
            ),
            // Still open: counted as raised, not as handled.
            alarm(6, EventKind::ButtonPress, "b2", t + 3000),
        ];
        let f = compute(None, &alarms, &[], &[], p, u64::MAX);
        assert_eq!((f.alarms, f.care_alarms, f.technical_alarms), (5, 4, 1));
        assert_eq!(f.time_to_acknowledge.count, 3);
        assert_eq!(f.time_to_acknowledge.median_s, Some(60.0));
        assert_eq!(f.time_to_acknowledge.p90_s, Some(90.0));
        assert_eq!(f.time_to_close.median_s, Some(600.0));
        assert_eq!(f.time_to_close.p90_s, Some(1200.0));
        assert_eq!(f.per_kind["button_press"], 3);
        assert_eq!(f.per_kind["device_silent"], 1);
        assert_eq!(f.per_day.len(), 31, "every day of the period");
        assert_eq!(f.per_day["2025-01-10"]["button_press"], 3);
        assert!(f.per_day["2025-01-11"].is_empty());
        assert_eq!(f.care_closed, 3);
        assert_eq!(f.causes["false"], 1);
        assert_eq!(f.causes["none"], 0);
        assert_eq!(f.false_alarm_share, Some(0.3333));
    }

    #[test]
    fn no_closed_care_alarms_means_no_false_alarm_share() {
        let f = compute(
            None,
            &[],
            &[],
            &[],
            period("2025-01-01", "2025-01-01"),
            u64::MAX,
        );
        assert_eq!(f.false_alarm_share, None);
        assert_eq!(f.time_to_acknowledge.median_s, None);
        assert_eq!(f.device_uptime_mean, None);
    }

    #[test]
    fn uptime_is_the_share_of_the_period_not_covered_by_silent_or_offline_alarms() {
        let p = period("2025-01-01", "2025-01-10");
        let start = p.start_ms();
        let day = DAY_MS as u64;
        // b1 silent for a day (closed); then again, overlapping a second
        // alarm of it, for half a day. b2 never silent.
        let mut s1 = alarm(1, EventKind::DeviceSilent, "b1", start + day);
        s1.clear("back", start + 2 * day);
        let mut s2 = alarm(2, EventKind::DeviceSilent, "b1", start + 4 * day);
        s2.clear("back", start + 4 * day + day / 2);
        let mut s3 = alarm(3, EventKind::DeviceSilent, "b1", start + 4 * day + day / 4);
        s3.clear("back", start + 4 * day + day / 2);
        // The gateway offline from before the period into its first day,
        // and again at its end, still open.
        let mut g1 = alarm(4, EventKind::GatewayOffline, "gw-1", start - day);
        g1.clear("back", start + day / 2);
        let g2 = alarm(5, EventKind::GatewayOffline, "gw-1", start + 9 * day);
        let devices = [
            DeviceRef {
                gateway: "gw-1".into(),
                device: "b1".into(),
                first_ms: 0,
            },
            DeviceRef {
                gateway: "gw-1".into(),
                device: "b2".into(),
                first_ms: start + 5 * day,
            },
        ];
        let f = compute(
            None,
            &[s1, s2, s3, g1, g2],
            &devices,
            &["gw-1".to_string()],
            p,
            u64::MAX,
        );
        let b1 = &f.devices[0];
        assert_eq!(b1.id, "b1");
        assert_eq!(b1.down_s, 86_400 + 43_200);
        assert_eq!(b1.uptime, 0.85);
        assert_eq!(b1.outages, 3);
        let b2 = &f.devices[1];
        assert_eq!(
            (b2.uptime, b2.counted_s),
            (1.0, 5 * 86_400),
            "counted from first heard"
        );
        assert_eq!(f.device_uptime_mean, Some(0.925));
        let gw = &f.gateways[0];
        assert_eq!(gw.down_s, 43_200 + 86_400);
        assert_eq!(gw.uptime, 0.85);
        // Asked in the middle of the period: counted only until now.
        let f = compute(None, &[], &devices[..1], &[], p, start + 2 * day);
        assert_eq!(f.devices[0].counted_s, 2 * 86_400);
    }

    #[test]
    fn gather_keeps_to_the_scope_of_units() {
        use crate::access::Resident;
        use crate::ingest::tests::{batch, record};
        use crate::store::Op;
        use trygg_protocol::Lane;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("bridge.redb")).unwrap();
        store
            .put_resident(
                &Resident {
                    id: "r-1".into(),
                    name: "Ola".into(),
                    unit: "sentrum".into(),
                    address: String::new(),
                    notes: String::new(),
                },
                "admin",
                1,
            )
            .unwrap();
        let mut r = record(Lane::Alarm, 1, "b1", 1, EventKind::ButtonPress);
        r.resident = Some("r-1".into());
        let mut other = record(Lane::Alarm, 2, "b2", 1, EventKind::ButtonPress);
        other.resident = Some("r-unregistered".into());
        let t = date("2025-01-10").start_ms();
        store
            .commit(vec![Op::Ingest(batch(1, vec![r, other]))], t)
            .unwrap();
        let p = period("2025-01-01", "2025-01-31");
        let all = gather(&store, &Scope::All, None, false, p, t + 1000).unwrap();
        assert_eq!(all.alarms, 2);
        assert_eq!(all.devices.len(), 2);
        assert_eq!(all.gateways.len(), 1);
        let sentrum = Scope::Units(vec!["sentrum".into()]);
        let f = gather(&store, &sentrum, Some("sentrum".into()), false, p, t + 1000).unwrap();
        assert_eq!(f.alarms, 1);
        assert_eq!(f.devices.len(), 1);
        assert_eq!(f.devices[0].id, "b1");
        assert!(f.gateways.is_empty(), "gw-1 is in no unit");
        let tech = gather(&store, &Scope::All, None, true, p, t + 1000).unwrap();
        assert_eq!(tech.alarms, 0);
    }
}
