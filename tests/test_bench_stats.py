"""`zoo bench`'s statistics on known data, against numpy: the percentiles, the latency row
(median, p90, p99, IQR) and the sustained throughput. No model is run."""

import numpy as np
import pytest

from zoo.bench import percentile, summarize

# Skewed on purpose (a long tail of slow iterations), so that neighbouring percentiles differ
# and the IQR is not twice the distance from the median to either quartile.
TIMES = [0.001 * (1 + k**2 / 10) for k in range(40)]


@pytest.mark.parametrize("q", [0, 10, 25, 50, 75, 90, 95, 99, 100])
def test_percentile_is_numpys_linear_interpolation(q):
    assert percentile(TIMES, q) == pytest.approx(np.percentile(TIMES, q), rel=1e-12)
    assert percentile([3.0, 1.0, 2.0, 4.0], q) == pytest.approx(np.percentile([1, 2, 3, 4], q))


def test_percentile_of_a_hand_worked_case():
    values = [10.0, 20.0, 30.0, 40.0, 50.0]  # positions 0..4: the q-th percentile at q/25
    assert percentile(values, 50) == 30.0
    assert percentile(values, 90) == pytest.approx(46.0)  # position 3.6
    assert percentile(values, 95) == pytest.approx(48.0)  # position 3.8


def test_the_latency_row_is_every_iteration_summarised():
    repeats = [TIMES[0::3], TIMES[1::3], TIMES[2::3]]  # every iteration, in three repeats
    row = summarize(repeats, batch=8)
    times = np.array(TIMES) * 1000  # ms
    assert row["timed_iterations"] == len(TIMES)
    assert row["latency_ms_median"] == pytest.approx(np.percentile(times, 50))
    assert row["latency_ms_p90"] == pytest.approx(np.percentile(times, 90))
    assert row["latency_ms_p99"] == pytest.approx(np.percentile(times, 99))
    q75, q25 = np.percentile(times, [75, 25])
    assert row["latency_ms_iqr"] == pytest.approx(q75 - q25)
    # the numbers that would pass for them if the wrong percentile were taken are far off
    assert abs(row["latency_ms_p90"] - np.percentile(times, 95)) > 1
    assert abs(row["latency_ms_iqr"] - (q75 - np.percentile(times, 50))) > 1


def test_throughput_is_the_median_over_repeats_of_images_over_time():
    repeats = [[0.1, 0.1], [0.2, 0.2, 0.2, 0.2], [0.1, 0.3]]  # 80, 40 and 40 images/s at batch 8
    row = summarize(repeats, batch=8)
    assert row["images_per_second"] == pytest.approx(40.0)
    assert summarize([[0.1], [0.05], [0.2]], batch=4)["images_per_second"] == pytest.approx(40.0)
