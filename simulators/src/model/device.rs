//! A device's state through the run: its registers, the incidents it
//! goes through (configured and background), the lift's events, the patrol
//! app's inspections.

use super::*;

impl DeviceState {
    /// At the first step: schedules a rollover by starting the register
    /// where it will reach its capacity around the configured time.
    pub(super) fn initialise(&mut self, t: DateTime<Utc>, shared: &Shared) {
        self.initialised = true;
        self.truth.first_register = Some(self.register);
        if let (Some(capacity), Some(f)) = (
            self.capacity,
            self.faults.iter().find(|f| f.kind == FaultKind::Rollover),
        ) {
            // Expected use until the date, from the drivers sampled hourly.
            let mut expected = 0.0;
            let mut at = t;
            while at < f.start {
                let x = shared.drivers(at);
                expected +=
                    base_rate(&self.device, self.rated, &x, &shared.site) * self.factor(at, shared);
                at += Duration::hours(1);
            }
            self.register = (capacity - expected).max(0.0).min(capacity - 0.001);
            self.truth.first_register = Some(self.register);
        }
    }

    /// Moves faults over before `before` to `done` (a pending rollover
    /// stays until its register wraps).
    pub(super) fn retire(&mut self, before: DateTime<Utc>) {
        let pending = self.rollover_pending;
        let is_over = |f: &Fault| f.end < before && !(pending && f.kind == FaultKind::Rollover);
        if !self.faults.iter().any(is_over) {
            return;
        }
        let (over, open): (Vec<Fault>, Vec<Fault>) = std::mem::take(&mut self.faults)
            .into_iter()
            .partition(is_over);
        self.done.extend(over);
        self.faults = open;
    }

    pub(super) fn active(&self, t: DateTime<Utc>, kind: FaultKind) -> Option<&Fault> {
        self.faults.iter().find(|f| f.kind == kind && f.active(t))
    }

    /// Product of (1 − saving) of the retrofits in effect at `t`.
    pub(super) fn factor(&self, t: DateTime<Utc>, shared: &Shared) -> f64 {
        self.retrofits
            .iter()
            .map(|&r| &shared.scenario.retrofits[r])
            .filter(|r| r.at <= t)
            .map(|r| 1.0 - r.saving)
            .product()
    }

    /// The load after the retrofits in effect; books the counterfactual.
    pub(super) fn retrofitted(
        &mut self,
        base: f64,
        hours: f64,
        t: DateTime<Utc>,
        shared: &Shared,
    ) -> f64 {
        let factor = self.factor(t, shared);
        let actual = base * factor;
        for (k, &r) in self.retrofits.iter().enumerate() {
            let r = &shared.scenario.retrofits[r];
            if r.at <= t {
                self.retro[k].0 += actual / (1.0 - r.saving) * hours;
                self.retro[k].1 += actual * hours;
            }
        }
        actual
    }

    /// Advances the register by `rate × hours` as the meter sees it (stuck,
    /// reset, replaced, wrapping) and returns (register, gauge) to publish.
    pub(super) fn count(
        &mut self,
        rate: f64,
        hours: f64,
        t: DateTime<Utc>,
        dt: Duration,
    ) -> (f64, f64) {
        let used = rate * hours;
        self.truth.consumption += used;
        for f in self.faults.iter_mut() {
            let fires = f.start > t - dt && f.start <= t;
            if !fires {
                continue;
            }
            match f.kind {
                FaultKind::CounterReset => self.register = 0.0,
                FaultKind::MeterReplacement => self.register = f.value.unwrap_or(0.0),
                _ => {}
            }
        }
        if self.active(t, FaultKind::MeterStuck).is_some() {
            let frozen = *self.frozen.get_or_insert((self.register, rate));
            self.truth.lost += used;
            return frozen;
        }
        self.frozen = None;
        self.register += used;
        if let Some(capacity) = self.capacity {
            if self.register >= capacity {
                self.register -= capacity;
                // The wrap happens when it happens: the truth says when.
                if self.rollover_pending {
                    self.rollover_pending = false;
                    if let Some(f) = self
                        .faults
                        .iter_mut()
                        .find(|f| f.kind == FaultKind::Rollover)
                    {
                        f.start = t;
                        f.end = t;
                    }
                }
            }
        }
        self.truth.last_register = Some(self.register);
        (self.register, rate)
    }

    /// Reports the lift's `state` at `ts` and keeps it as its state.
    fn enter(&mut self, out: &mut Vec<SimEvent>, ts: DateTime<Utc>, state: LiftState) {
        out.push(SimEvent {
            ts,
            kind: SimEventKind::State(state),
        });
        self.lift_state = state;
    }

    /// Whether a technician has the lift (maintenance or inspection) at `t`.
    pub(super) fn in_mode(&self, t: DateTime<Utc>) -> bool {
        self.active(t, FaultKind::LiftMaintenance).is_some()
            || self.active(t, FaultKind::LiftInspection).is_some()
    }

    /// Whether a lift fault or entrapment (or being out of service) holds
    /// the lift at `t`.
    pub(super) fn lift_stopped(&self, t: DateTime<Utc>) -> bool {
        self.faults.iter().any(|f| {
            matches!(
                f.kind,
                FaultKind::LiftFault | FaultKind::LiftEntrapment | FaultKind::LiftOutOfService
            ) && f.active(t)
        })
    }

    /// The patrol app's inspections of a tracked device (a class or its own
    /// cycle) in `(t - dt, t]`, and the fate of each window decided in it
    /// (kept in the truth). Each window's fate is drawn from its start:
    /// late or missed at the scenario's shares, otherwise inspected in
    /// working time (09:00–17:00 of a day's window, the same share of a
    /// longer one). A window after a late or missed one, and a lift's
    /// window with a maintenance visit near it, is inspected on time, later
    /// in the window (so the late inspection before it, or the grace of
    /// the missed one, is not mistaken for its own); the window the run
    /// starts in is inspected after the start.
    pub(super) fn inspections(
        &mut self,
        t: DateTime<Utc>,
        dt: Duration,
        shared: &Shared,
    ) -> Vec<SimEvent> {
        let bg = &shared.scenario.background_of(&self.device.id);
        let Some(cycle) = self.device.cycle().filter(|_| bg.patrol_inspections) else {
            return Vec::new();
        };
        let windows = cycle.windows(t - dt - cycle.longest() * 3, t, shared.tz);
        let maintenance: Vec<DateTime<Utc>> = self
            .done
            .iter()
            .chain(&self.faults)
            .filter(|f| f.kind == FaultKind::LiftMaintenance)
            .map(|f| f.start)
            .collect();
        let key = self.key;
        let raw = |w: (DateTime<Utc>, DateTime<Utc>)| {
            let u = unit(mix(key ^ 0x1_5bec ^ w.0.timestamp() as u64));
            let near = maintenance
                .iter()
                .any(|m| *m >= w.0 && *m < w.1 + (w.1 - w.0) / 2);
            let fate = if u < bg.missed_inspection_share {
                InspectionFate::Missed
            } else if u < bg.missed_inspection_share + bg.late_inspection_share {
                InspectionFate::Late
            } else {
                InspectionFate::OnTime
            };
            (fate, near)
        };
        let fate = |k: usize| {
            let (f, near) = raw(windows[k]);
            let forced = near
                || k.checked_sub(1)
                    .map(|j| raw(windows[j]))
                    .is_some_and(|(p, pn)| p == InspectionFate::Late || pn);
            if forced || windows[k].0 <= self.started {
                InspectionFate::OnTime
            } else {
                f
            }
        };
        let within = |x: DateTime<Utc>| x > t - dt && x <= t;
        let mut out = Vec::new();
        for (k, &(start, end)) in windows.iter().enumerate().skip(1) {
            if end <= self.started {
                continue;
            }
            let len = end - start;
            let u = unit(mix(key ^ 0x2_5bec ^ start.timestamp() as u64));
            let share = |x: f64| Duration::milliseconds((len.num_milliseconds() as f64 * x) as i64);
            let f = fate(k);
            let at = match f {
                InspectionFate::Missed => None,
                InspectionFate::Late => Some(end + share(0.1 + 0.3 * u)),
                InspectionFate::OnTime => {
                    let after =
                        matches!(fate(k - 1), InspectionFate::Missed | InspectionFate::Late);
                    let (mut a, mut b) = (
                        start + share(if after { 0.6 } else { 0.375 }),
                        start + share(0.708),
                    );
                    if self.started >= a {
                        // After the run's start, inside the window even
                        // when the run starts in its last minute.
                        a = self.started + Duration::minutes(1).min((end - self.started) / 2);
                        b = b.max(a + (end - a) / 2);
                    }
                    Some(a + Duration::milliseconds(((b - a).num_milliseconds() as f64 * u) as i64))
                }
            };
            let decided = at.unwrap_or(end);
            if !within(decided) {
                continue;
            }
            self.truth.inspections.push(InspectionTruth {
                window_start: start,
                window_end: end,
                fate: f,
                at,
            });
            if let Some(at) = at {
                let pick = mix(key ^ 0x3_5bec ^ at.timestamp() as u64);
                let results = self
                    .device
                    .checklist
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let v = unit(mix(pick ^ i as u64));
                        let r = if v < 0.01 {
                            ItemResult::FailLarge
                        } else if v < 0.04 {
                            ItemResult::Fail
                        } else {
                            ItemResult::Ok
                        };
                        (item.clone(), r)
                    })
                    .collect();
                out.push(SimEvent {
                    ts: at,
                    kind: SimEventKind::Inspection {
                        by: TECHNICIANS[(pick % TECHNICIANS.len() as u64) as usize].to_owned(),
                        results,
                    },
                });
            }
        }
        out
    }

    /// Events of faults that begin or end in `(t - dt, t]`.
    pub(super) fn instant_events(
        &mut self,
        t: DateTime<Utc>,
        dt: Duration,
        shared: &Shared,
    ) -> Vec<SimEvent> {
        let mut out = Vec::new();
        let within = |x: DateTime<Utc>| x > t - dt && x <= t;
        let faults = self.faults.clone();
        for f in &faults {
            match f.kind {
                // A lift in maintenance reports the fault but stays in
                // maintenance mode (the technician has it).
                // A fault's start and its end are separate events: a fault
                // shorter than one step has both in it, in order.
                FaultKind::LiftEntrapment | FaultKind::LiftFault
                    if within(f.start) || within(f.end) =>
                {
                    if within(f.start) {
                        out.push(SimEvent {
                            ts: f.start,
                            kind: SimEventKind::Fault {
                                code: f.code.clone().unwrap_or_else(|| "fault".into()),
                            },
                        });
                        if !self.in_mode(f.start) {
                            self.enter(&mut out, f.start, LiftState::Fault);
                        }
                    }
                    // Released: back to idle unless another fault, or the
                    // maintenance under way, holds it.
                    if within(f.end) && !self.lift_stopped(f.end) && !self.in_mode(f.end) {
                        self.enter(&mut out, f.end, LiftState::Idle);
                    }
                }
                // With the technician's card, or (`no_card`) without: then
                // the visit does not count as the lift's check.
                FaultKind::LiftMaintenance if within(f.start) => {
                    out.push(SimEvent {
                        ts: f.start,
                        kind: if f.code.as_deref() == Some("no_card") {
                            SimEventKind::State(LiftState::Maintenance)
                        } else {
                            SimEventKind::MaintenanceMode {
                                credential: TECHNICIAN_CARD.to_owned(),
                            }
                        },
                    });
                    self.lift_state = LiftState::Maintenance;
                }
                FaultKind::LiftInspection | FaultKind::LiftOutOfService if within(f.start) => {
                    let state = if f.kind == FaultKind::LiftInspection {
                        LiftState::Inspection
                    } else {
                        LiftState::OutOfService
                    };
                    self.enter(&mut out, f.start, state);
                }
                // The false alarm: the alarm only; its rescue steps below.
                FaultKind::LiftFalseAlarm if within(f.start) => out.push(SimEvent {
                    ts: f.start,
                    kind: SimEventKind::Fault {
                        code: "entrapment".into(),
                    },
                }),
                // Back from maintenance, inspection or out of service: idle,
                // or in fault if one holds it.
                FaultKind::LiftMaintenance
                | FaultKind::LiftInspection
                | FaultKind::LiftOutOfService
                    if within(f.end) =>
                {
                    let state = if self.lift_stopped(f.end) {
                        LiftState::Fault
                    } else {
                        LiftState::Idle
                    };
                    self.enter(&mut out, f.end, state);
                }
                FaultKind::DoorForced if within(f.start) => out.push(SimEvent {
                    ts: f.start,
                    kind: SimEventKind::DoorForced,
                }),
                FaultKind::DoorHeldOpen if within(f.start) => out.push(SimEvent {
                    ts: f.start,
                    kind: SimEventKind::DoorHeldOpen {
                        seconds: f.seconds.unwrap_or(120.0),
                    },
                }),
                FaultKind::DeniedBurst if within(f.start) => {
                    let credential = shared.credentials[(mix(self.key ^ f.start.timestamp() as u64)
                        % shared.credentials.len() as u64)
                        as usize]
                        .clone();
                    for k in 0..5 {
                        out.push(SimEvent {
                            ts: f.start + Duration::seconds(30 * k),
                            kind: SimEventKind::Access {
                                granted: false,
                                method: AccessMethod::Card,
                                credential: credential.clone(),
                                direction: Direction::In,
                                expired: false,
                            },
                        });
                    }
                }
                _ => {}
            }
            if matches!(
                f.kind,
                FaultKind::LiftEntrapment | FaultKind::LiftFalseAlarm
            ) {
                for (step, at) in rescue_timeline(f) {
                    if within(at) {
                        out.push(SimEvent {
                            ts: at,
                            kind: SimEventKind::Rescue(step),
                        });
                    }
                }
            }
        }
        if self.device.kind == DeviceKind::Lift {
            // The daily test call, unless the line is down.
            for day in [t - dt, t] {
                let date = day.with_timezone(&shared.tz).date_naive();
                let Some(at) = date
                    .and_hms_opt(ALARM_TEST_HOUR, 0, 0)
                    .and_then(|l| l.and_local_timezone(shared.tz).earliest())
                    .map(|l| l.with_timezone(&Utc))
                else {
                    continue;
                };
                let down = self.active(at, FaultKind::AlarmLineDown).is_some();
                let failing = self.active(at, FaultKind::AlarmTestFailed).is_some();
                if within(at) && !down && !out.iter().any(|e| e.ts == at) {
                    out.push(SimEvent {
                        ts: at,
                        kind: SimEventKind::AlarmTest { passed: !failing },
                    });
                }
            }
        }
        out.sort_by_key(|e| e.ts);
        // Events in the step's future (a burst's later swipes) are stamped
        // inside the step so nothing is published ahead of its time: a
        // second apart, in order, ending a second before the step's end (an
        // on-time swipe may sit at it), so none collapses into another (an
        // event's identity includes its timestamp).
        let late = out.iter().filter(|e| e.ts > t).count() as i64;
        let mut k = 0;
        for e in &mut out {
            if e.ts > t {
                k += 1;
                e.ts = t - Duration::seconds(late - k + 1);
            }
        }
        out
    }

    /// Background incidents starting in this step, at the scenario's rates.
    pub(super) fn draw_background(
        &mut self,
        t: DateTime<Utc>,
        dt: Duration,
        hours: f64,
        shared: &Shared,
    ) {
        let bg = &shared.scenario.background_of(&self.device.id);
        let per_year = hours / 8766.0;
        let mut new = Vec::new();
        let maybe = |rng: &mut ChaCha8Rng, rate: f64| {
            rate > 0.0 && rng.random_bool((rate * per_year).min(1.0))
        };
        match self.device.kind {
            DeviceKind::Lift => {
                let keep = 1.0
                    - self
                        .retrofits
                        .iter()
                        .map(|&r| &shared.scenario.retrofits[r])
                        .filter(|r| r.at <= t)
                        .map(|r| r.fault_reduction)
                        .fold(0.0, f64::max);
                let busy = self.lift_stopped(t);
                if !busy && maybe(&mut self.rng, bg.entrapments_per_year * keep) {
                    let minutes = self.rng.random_range(10..45);
                    new.push((FaultKind::LiftEntrapment, minutes, Some("entrapment"), None));
                } else if !busy && maybe(&mut self.rng, bg.lift_faults_per_year * keep) {
                    let code = ["door_fault", "levelling_error", "overspeed", "door_fault"]
                        [self.rng.random_range(0..4)];
                    let minutes = self.rng.random_range(20..150);
                    new.push((FaultKind::LiftFault, minutes, Some(code), None));
                }
            }
            DeviceKind::AccessGate => {
                if maybe(&mut self.rng, bg.doors_held_open_per_week * 52.18) {
                    let seconds = self.rng.random_range(60..900) as f64;
                    new.push((FaultKind::DoorHeldOpen, 0, None, Some(seconds)));
                }
                if maybe(&mut self.rng, bg.doors_forced_per_year) {
                    new.push((FaultKind::DoorForced, 0, None, None));
                }
                if maybe(&mut self.rng, bg.denied_bursts_per_year) {
                    new.push((FaultKind::DeniedBurst, 0, None, None));
                }
            }
            _ => {}
        }
        for (kind, minutes, code, seconds) in new {
            // Whole seconds inside the step, so the stored event matches.
            let into = self.rng.random_range(0..dt.num_seconds().max(1));
            let start = t - dt + Duration::seconds(into + 1);
            self.faults.push(Fault {
                kind,
                device: self.device.id.clone(),
                start,
                end: start + Duration::minutes(minutes),
                value: None,
                seconds,
                code: code.map(str::to_owned),
                origin: Origin::Background,
            });
        }
    }
}
