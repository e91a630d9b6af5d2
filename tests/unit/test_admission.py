"""Admission at the first step (mmtriton/backend/admission.py) and the policy that sizes it,
on real ledger files with an explicit clock: no server needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmtriton.backend import admission as adm
from mmtriton.backend.admission import Admission, AdmissionSettings, Ledger
from mmtriton.server.probe import ANSWERED_STATUSES, UNREACHABLE_HINTS
from mmtriton_build.export import policy
from mmtriton_build.export.repository import preprocess_config
from mmtriton_client.retry import is_retryable
from mmtriton_harness.reliability.load import Outcome, error_kind
from mmtriton_harness.reliability.overload import refused_by
from mmtriton_harness.reliability.report import missed, summarize_report

T0 = 1_700_000_000.0  # an epoch boundary (multiple of EPOCH_S)
SETTINGS = AdmissionSettings(
    wait_budget_s=0.2, min_in_flight=4, max_in_flight=30, max_age_s=5.0, stall_after_s=2.0
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger"


def test_in_flight_is_admitted_minus_completed_across_separate_mappings(path) -> None:
    preprocess_0, preprocess_1, fusion = Ledger(path), Ledger(path), Ledger(path)
    preprocess_0.admit(0, T0, 3)
    preprocess_1.admit(1, T0 + 0.1, 2)
    assert fusion.in_flight(5.0, now=T0 + 0.2) == 5
    fusion.complete(0, [T0, T0, T0 + 0.1], now=T0 + 0.3)
    assert preprocess_0.in_flight(5.0, now=T0 + 0.3) == 2
    fusion.complete(0, [T0, T0 + 0.1], now=T0 + 0.4)
    assert preprocess_1.in_flight(5.0, now=T0 + 0.4) == 0


def test_warm_up_rows_without_a_stamp_are_not_completions(path) -> None:
    ledger = Ledger(path)
    ledger.admit(0, T0, 1)
    ledger.complete(0, [0.0] * 32, now=T0 + 0.1)  # fusion's own warm-up: PIPELINE_START 0
    assert ledger.in_flight(5.0, now=T0 + 0.1) == 1


def test_a_lost_request_ages_out_instead_of_shrinking_the_bound_for_good(path) -> None:
    ledger = Ledger(path)
    ledger.admit(0, T0, 7)  # never completed: lost after the fan-out
    assert ledger.in_flight(5.0, now=T0 + 4.9) == 7
    assert ledger.in_flight(5.0, now=T0 + 5.3) == 0


def test_ring_entries_are_reused_for_newer_epochs_without_old_counts(path) -> None:
    ledger = Ledger(path)
    ledger.admit(0, T0, 5)
    later = T0 + adm.RING * adm.EPOCH_S  # same ring entry, RING epochs later
    ledger.admit(0, later, 1)
    assert ledger.in_flight(5.0, now=later) == 1
    # A completion for the old epoch, arriving after its entry was reused, is dropped.
    ledger.complete(0, [T0], now=later)
    assert ledger.in_flight(5.0, now=later) == 1


def test_samples_still_decoding_count_while_reserved_and_age_out(path) -> None:
    ledger = Ledger(path)
    ledger.reserve(1, 6, now=T0)
    assert ledger.in_flight(5.0, now=T0 + 0.1) == 6
    assert ledger.in_flight(5.0, now=T0 + 5.5) == 0  # a stub that died mid-batch
    ledger.reserve(1, 0)
    assert ledger.in_flight(5.0) == 0


def test_pace_is_samples_finished_per_second_over_the_last_whole_epochs(path) -> None:
    ledger = Ledger(path)
    for k in range(adm.PACE_EPOCHS):
        ledger.complete(0, [T0] * 10, now=T0 + k * adm.EPOCH_S)
    now = T0 + adm.PACE_EPOCHS * adm.EPOCH_S + 0.01
    expected = 10 * adm.PACE_EPOCHS / (adm.PACE_EPOCHS * adm.EPOCH_S)
    assert ledger.snapshot(5.0, now=now).pace == pytest.approx(expected)


def test_bound_follows_the_pace_within_its_clamps(path) -> None:
    admission = Admission(Ledger(path), 0, SETTINGS)
    assert admission.bound(0.0) == SETTINGS.min_in_flight  # cold start, light traffic
    assert admission.bound(100.0) == 20  # 100 samples/s x 0.2 s
    assert admission.bound(10_000.0) == SETTINGS.max_in_flight


def test_choose_admits_in_arrival_order_up_to_the_bound(path) -> None:
    ledger = Ledger(path)
    admission = Admission(ledger, 0, SETTINGS)
    ledger.admit(1, T0, 2)  # the sibling instance holds 2
    decision = admission.choose([1, 1, 1, 1, 1], now=T0 + 0.1)
    assert decision.bound == SETTINGS.min_in_flight  # no pace yet
    assert decision.admitted == [True, True, False, False, False]
    # The admitted samples are reserved at once: the sibling sees 4 in flight.
    assert ledger.in_flight(5.0, now=T0 + 0.1) == 4


def test_a_request_larger_than_the_bound_is_admitted_when_the_pipeline_is_empty(path) -> None:
    admission = Admission(Ledger(path), 0, SETTINGS)
    assert admission.choose([32, 1], now=T0).admitted == [True, False]


def test_admitted_moves_samples_from_reserved_to_admitted_and_done_clears(path) -> None:
    ledger = Ledger(path)
    admission = Admission(ledger, 0, SETTINGS)
    admission.choose([2, 2], now=T0)
    admission.admitted(T0, 2, still_decoding=2)
    assert ledger.in_flight(5.0, now=T0) == 4
    admission.done()  # the second failed validation: never admitted
    assert ledger.in_flight(5.0, now=T0) == 2


def test_a_stuck_pipeline_is_admitted_so_that_the_probe_meets_the_hang(path) -> None:
    ledger = Ledger(path)
    admission = Admission(ledger, 0, SETTINGS)
    ledger.admit(0, T0, 10)  # over the bound, and nothing finishes
    assert admission.choose([1], now=T0 + 1.0).admitted == [False]  # young: overload
    assert admission.choose([1], now=T0 + 2.6).admitted == [True]  # stuck: let it meet it


def test_overload_with_a_working_pipeline_is_never_taken_for_a_stall(path) -> None:
    ledger = Ledger(path)
    admission = Admission(ledger, 0, SETTINGS)
    ledger.admit(0, T0, 40)
    for k in range(12):  # one sample finishes per epoch: slow, but moving
        ledger.complete(0, [T0], now=T0 + k * adm.EPOCH_S)
    assert admission.choose([1], now=T0 + 3.0).admitted == [False]


def test_stale_ledgers_of_dead_servers_are_removed(tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    mine = adm.ledger_path(os.getpid(), tmp_path)
    gone = adm.ledger_path(int(dead), tmp_path)
    for p in (mine, gone):
        Ledger(p).close()
    assert adm.remove_stale_ledgers(tmp_path) == [gone]
    assert mine.exists() and not gone.exists()


def test_instance_slots_come_from_triton_instance_names() -> None:
    assert adm.instance_slot("preprocess_0_0") == 0
    assert adm.instance_slot("preprocess_0_1") == 1
    assert adm.instance_slot("fusion") == 0
    with pytest.raises(ValueError, match="at most"):
        adm.instance_slot(f"preprocess_0_{adm.MAX_WRITERS}")


def test_settings_travel_through_the_preprocess_config_parameters() -> None:
    params = policy.ADMISSION.as_parameters()
    assert AdmissionSettings.from_parameters(params) == policy.ADMISSION
    assert AdmissionSettings.from_parameters({"tokenizer_file": "t.json"}) is None
    partial = {k: v for k, v in params.items() if k != adm.PARAMETERS["stall_after_s"]}
    with pytest.raises(ValueError, match="admission_stall_after_s"):
        AdmissionSettings.from_parameters(partial)
    config = preprocess_config()
    for key, value in params.items():
        assert f'key: "{key}"\n  value: {{ string_value: "{value}" }}' in config


def test_policy_derives_the_bound_from_capacity_and_the_objective() -> None:
    s = policy.admission_settings(capacity_samples_per_s=100.0, objective_s=0.5)
    assert s.wait_budget_s == pytest.approx(0.5 * policy.ADMISSION_WAIT_SHARE)
    assert s.max_in_flight == round(100.0 * s.wait_budget_s)
    assert s.min_in_flight == min(policy.POLICIES["preprocess"].preferred_batch_sizes)
    faster = policy.admission_settings(capacity_samples_per_s=400.0, objective_s=0.5)
    assert faster.max_in_flight > s.max_in_flight


@pytest.mark.parametrize(
    "bad",
    [
        {"min_in_flight": 0},
        {"min_in_flight": 40},
        {"wait_budget_s": 0.0},
        {"max_age_s": 100.0},
        {"stall_after_s": 0.5},
    ],
)
def test_settings_refuse_values_that_cannot_work(bad) -> None:
    fields = {**SETTINGS.__dict__, **bad}
    with pytest.raises(ValueError):
        AdmissionSettings(**fields)


def test_a_ledger_left_under_a_reused_pid_by_an_earlier_server_is_replaced(tmp_path) -> None:
    mine = adm.ledger_path(os.getpid(), tmp_path)
    old = Ledger(mine)
    old.admit(0, T0, 9)
    old.close()
    os.utime(mine, (T0 - 10**6, T0 - 10**6))  # written long before this process started
    fresh = adm.open_ledger(os.getpid(), tmp_path)
    assert fresh.in_flight(5.0, now=T0) == 0
    again = adm.open_ledger(os.getpid(), tmp_path)  # a sibling stub: same fresh file
    fresh.admit(0, T0, 2)
    assert again.in_flight(5.0, now=T0) == 2


def test_the_refusal_is_retryable_a_harness_rejection_and_an_answer_for_the_probe() -> None:
    message = f"in ensemble 'multimodal', {adm.REFUSAL.format(bound=24)}"
    assert is_retryable("UNAVAILABLE", message)
    assert error_kind("UNAVAILABLE", message) == "rejected"
    # The supervisor's probe counts UNAVAILABLE as "answered" unless it names no listener.
    assert "UNAVAILABLE" in ANSWERED_STATUSES
    assert not any(hint in message.lower() for hint in UNREACHABLE_HINTS)


def test_overload_targets_are_the_issue_s_and_a_miss_fails_the_run() -> None:
    base = {"server_crashes": 0}
    ok = {"ok_p99_ms": 480.0, "ok_p50_ms": 200.0, "rejected_p50_ms": 20.0}
    overload = {"rejected": 900, "lost": 0, "failed": 0, "timeout": 0, "in_flight_after": 0}
    overload["timeout_override"] = {"in_flight_after": 0}
    summary = summarize_report({**base, "overload": {**overload, **ok}})
    assert summary["overload_p99_ms"] == 480.0 and missed(summary) == []
    slow = summarize_report({**base, "overload": {**overload, **ok, "ok_p99_ms": 501.0}})
    assert missed(slow) == ["overload_p99_ms"]
    late = summarize_report({**base, "overload": {**overload, **ok, "rejected_p50_ms": 50.0}})
    assert missed(late) == ["overload_refused_p50_ms"]


def test_refusals_are_counted_by_who_refused() -> None:
    outcomes = [
        Outcome(0, 1, "rejected", "UNAVAILABLE", adm.REFUSAL.format(bound=8)),
        Outcome(0, 1, "rejected", "UNAVAILABLE", "[request id: 1] Exceeds maximum queue size"),
        Outcome(0, 1, "rejected", "UNAVAILABLE", "Request timeout expired"),
        Outcome(0, 1, "ok"),
    ]
    assert refused_by(outcomes) == {
        "admission": 1,
        "queue_full": 1,
        "queue_timeout": 1,
        "other": 0,
    }
