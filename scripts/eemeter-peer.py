"""The peer in BENCHMARKS.md "Savings on meter data we did not make":
OpenEEmeter's own daily model (eemeter 4.1.1, PyPI) on its bundled sample
`il-electricity-cdd-hdd-daily` with the same baseline and reporting periods
as tests/import.rs gives estatemon (baseline 2015-12-26 .. 2016-12-26,
reporting 2017-01-04 .. 2018-01-04, America/Chicago; design saving 10 %).

    python3 -m venv /var/tmp/eem-venv && /var/tmp/eem-venv/bin/pip install eemeter==4.1.1
    /var/tmp/eem-venv/bin/python scripts/eemeter-peer.py

Not part of the tests (eemeter pulls in pandas, scipy and friends).
"""
import time

import pandas as pd
from eemeter.eemeter import DailyBaselineData, DailyModel, DailyReportingData
from eemeter.eemeter.samples.load import load_sample
import eemeter

meter, temperature, meta = load_sample("il-electricity-cdd-hdd-daily")
tz = "America/Chicago"
b0, b1 = "2015-12-26", "2016-12-26"
r0, r1 = "2017-01-04", "2018-01-04"


def cut(series, a, b):
    start = series.index.tz_convert(tz) >= pd.Timestamp(a, tz=tz)
    end = series.index.tz_convert(tz) < pd.Timestamp(b, tz=tz)
    return series[start & end]


def periods(baseline_data, reporting_data, meter, temperature):
    """The baseline and reporting data of one sample, in eemeter's classes."""
    baseline = baseline_data.from_series(
        cut(meter["value"], b0, b1), cut(temperature, b0, b1), is_electricity_data=True
    )
    reporting = reporting_data.from_series(
        cut(meter["value"], r0, r1), cut(temperature, r0, r1), is_electricity_data=True
    )
    return baseline, reporting


def report(label, predicted, started):
    observed = predicted["observed"].sum()
    expected = predicted["predicted"].sum()
    print(
        f"eemeter {eemeter.__version__}{label}: adjusted baseline {expected:.1f} kWh, observed "
        f"{observed:.1f} kWh, saving {100 * (expected - observed) / expected:.2f} % "
        f"({time.perf_counter() - started:.1f} s)"
    )


started = time.perf_counter()
baseline, reporting = periods(DailyBaselineData, DailyReportingData, meter, temperature)
model = DailyModel().fit(baseline, ignore_disqualification=True)
report("", model.predict(reporting, ignore_disqualification=True), started)

# The hourly peer: CalTRACK's hourly model (eemeter's HourlyCaltrackModel,
# three-month weighted segments) on the hourly sample of the same meter,
# `il-electricity-cdd-hdd-hourly`, the same periods; tests/import.rs
# measures estatemon's hourly model on it.
from eemeter.eemeter import (
    HourlyCaltrackBaselineData,
    HourlyCaltrackModel,
    HourlyCaltrackReportingData,
)

meter, temperature, meta = load_sample("il-electricity-cdd-hdd-hourly")
started = time.perf_counter()
baseline, reporting = periods(
    HourlyCaltrackBaselineData, HourlyCaltrackReportingData, meter, temperature
)
model = HourlyCaltrackModel().fit(baseline)
predicted = model.predict(reporting).dropna(subset=["observed", "predicted"])
report(" hourly", predicted, started)
