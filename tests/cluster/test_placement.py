"""How many worker actors `wanforge workers --ray` starts and what each asks Ray for (no cluster)."""

from __future__ import annotations

import pytest

from wanforge.cluster.placement import Placement, PlacementError, parse_resources, plan

EIGHT_GPUS = {"CPU": 96.0, "GPU": 8.0, "memory": 1e12}


def test_one_gpu_worker_per_gpu_the_cluster_reports() -> None:
    placement = plan(EIGHT_GPUS, count=None, cpus_per_worker=None, max_restarts=5)
    assert placement == Placement(count=8, num_gpus=1.0, num_cpus=1.0, max_restarts=5, resources={})
    assert placement.actor_options() == {
        "num_gpus": 1.0,
        "num_cpus": 1.0,
        "resources": {},
        "max_restarts": 5,
        "max_task_retries": 0,
    }


def test_count_overrides_the_gpu_count() -> None:
    assert plan(EIGHT_GPUS, count=3, cpus_per_worker=None, max_restarts=0).count == 3


def test_cpu_workers_default_to_as_many_as_the_cpus_hold() -> None:
    placement = plan({"CPU": 5.0}, count=None, cpus_per_worker=2, max_restarts=-1, resources={"node_b": 1})
    assert placement == Placement(
        count=2, num_gpus=0.0, num_cpus=2.0, max_restarts=-1, resources={"node_b": 1.0}
    )


def test_no_gpu_and_no_count_names_the_flags() -> None:
    with pytest.raises(PlacementError) as err:
        plan({"CPU": 4.0}, count=None, cpus_per_worker=None, max_restarts=5)
    assert str(err.value) == (
        "--count: the cluster reports no GPUs (CPU-only workers: --cpus-per-worker); give --count N"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0, "cpus_per_worker": 1.0, "max_restarts": 1}, "--count: must be at least 1"),
        (
            {"count": 1, "cpus_per_worker": 0.0, "max_restarts": 1},
            "--cpus-per-worker: must be a finite number more than 0",
        ),
        (
            {"count": 1, "cpus_per_worker": 1.0, "max_restarts": -2},
            "--max-restarts: must be -1 (no bound) or at least 0",
        ),
    ],
)
def test_bad_flags(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(PlacementError) as err:
        plan({"CPU": 4.0}, **kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_resources_json() -> None:
    assert parse_resources(None) == {}
    assert parse_resources('{"node_b": 1, "big": 0.5}') == {"node_b": 1.0, "big": 0.5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{node_b: 1}", "--resources: not JSON (Expecting property name enclosed in double quotes)"),
        ("[1]", '--resources: expected a JSON object such as {"node_b": 1}'),
        ('{"node_b": 0}', "--resources: 'node_b' must be a positive number, got 0"),
        ('{"node_b": true}', "--resources: 'node_b' must be a positive number, got True"),
        ('{"GPU": 2}', "--resources: GPU is set by --cpus-per-worker (and GPU workers)"),
    ],
)
def test_bad_resources(text: str, message: str) -> None:
    with pytest.raises(PlacementError) as err:
        parse_resources(text)
    assert str(err.value) == message


def test_two_gpu_workers_for_training_both_experts_at_once() -> None:
    placement = plan(EIGHT_GPUS, count=None, cpus_per_worker=None, max_restarts=5, gpus_per_worker=2)
    assert (placement.count, placement.num_gpus) == (4, 2.0)
    assert placement.actor_options()["num_gpus"] == 2.0
    with pytest.raises(PlacementError) as err:
        plan({"CPU": 8.0, "GPU": 1.0}, count=None, cpus_per_worker=None, max_restarts=5, gpus_per_worker=2)
    assert str(err.value) == (
        "--count: the cluster reports no room for 2 GPUs per worker (CPU-only workers: "
        "--cpus-per-worker); give --count N"
    )
    with pytest.raises(PlacementError, match="--gpus-per-worker: CPU-only workers"):
        plan(EIGHT_GPUS, count=1, cpus_per_worker=1.0, max_restarts=5, gpus_per_worker=2)
    with pytest.raises(PlacementError, match="--gpus-per-worker: must be at least 1"):
        plan(EIGHT_GPUS, count=1, cpus_per_worker=None, max_restarts=5, gpus_per_worker=0)


def test_infinite_amounts_are_refused_naming_the_flag() -> None:
    """JSON's Infinity and --cpus-per-worker inf are numbers over 0, but no Ray resource amount:
    Ray would refuse them with its own traceback after the CLI joined the cluster."""
    with pytest.raises(PlacementError) as err:
        parse_resources('{"node_b": Infinity}')
    assert str(err.value) == "--resources: 'node_b' must be a positive number, got inf"
    with pytest.raises(PlacementError) as err:
        plan({"CPU": 8.0}, count=1, cpus_per_worker=float("inf"), max_restarts=5)
    assert str(err.value) == "--cpus-per-worker: must be a finite number more than 0"
