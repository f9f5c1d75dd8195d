import pyarrow as pa

from tpt.generation.telemetry import measure


def test_running_and_waiting_requests_follow_from_the_request_intervals():
    # Two replicas; four requests over 10 s; 100 output tokens. Worked out by hand:
    # running time 10 + 5 + 5 + 4 = 24 s -> 2.4 on average, 1.2 per replica; waiting 0 + 1 + 5 + 2 = 8 s -> 0.4.
    # From t = 105 to 106 all four run: the peak is 4, 2 per replica.
    rows = pa.table(
        {
            "finish_reason": ["stop", "length", "stop", "stop", "error"],
            "output_tokens": [40, 20, 20, 20, 0],
            "queued_at": [100.0, 100.0, 100.0, 103.0, 100.0],
            "started_at": [100.0, 101.0, 105.0, 105.0, 100.0],
            "finished_at": [110.0, 106.0, 110.0, 109.0, 100.0],
        }
    )
    t = measure(rows, replicas=2, wall_s=3600.0, gpus_per_replica=1.0, max_num_seqs=8)
    assert t.generating_s == 10.0 and t.output_tokens == 100 and t.output_tokens_per_s == 10.0
    assert t.output_tokens_per_s_per_replica == 5.0
    assert t.mean_running_per_replica == 1.2 and t.peak_running_per_replica == 2.0
    assert t.mean_waiting_per_replica == 0.4
    assert t.gpu_hours == 2.0 and t.max_num_seqs == 8
    assert measure(rows, 1, 10.0, 0.0, None).gpu_hours is None


def test_rows_without_timestamps_give_no_telemetry():
    rows = pa.table(
        {
            "finish_reason": ["stop"],
            "output_tokens": [3],
            "queued_at": pa.array([None], pa.float64()),
            "started_at": pa.array([None], pa.float64()),
            "finished_at": pa.array([None], pa.float64()),
        }
    )
    assert measure(rows, 1, 1.0, 0.0, None) is None


def test_a_single_request_runs_alone():
    rows = pa.table(
        {
            "finish_reason": ["stop"],
            "output_tokens": [8],
            "queued_at": [0.0],
            "started_at": [1.0],
            "finished_at": [5.0],
        }
    )
    t = measure(rows, 1, 5.0, 0.0, None)
    assert t.peak_running_per_replica == 1.0 and t.output_tokens_per_s == 2.0 and t.mean_waiting_per_replica == 0.25
