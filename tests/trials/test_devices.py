"""GPU discovery and binding, by faking the GPUs a node offers (no GPU needed)."""

from __future__ import annotations

import pytest

from hpc_hpo.errors import ConfigError
from hpc_hpo.trials.devices import MEMBER, SPARE, WORKER, Binding, Place, apply_binding, assign, describe, discover_gpus


def node(first_rank: int, ranks: int, gpus: tuple[str, ...], host: str, cpus: int = 32) -> list[Place]:
    return [Place(first_rank + i, host, node=first_rank, local_rank=i, cpus=cpus, gpus=gpus, gpu_source="test")
            for i in range(ranks)]


EIGHT = tuple(str(i) for i in range(8))


@pytest.mark.parametrize("value, expected", [
    ("4,5,6,7", ("4", "5", "6", "7")),
    ("GPU-1a2b,GPU-3c4d", ("GPU-1a2b", "GPU-3c4d")),
    ("", ()),
    ("-1", ()),
    ("0,-1,2", ("0",)),  # CUDA ignores the ids after an invalid one
])
def test_an_inherited_visibility_list_is_what_the_job_may_use(value, expected):
    gpus, source, var = discover_gpus({"CUDA_VISIBLE_DEVICES": value})
    assert gpus == expected and source == "CUDA_VISIBLE_DEVICES" and var == "CUDA_VISIBLE_DEVICES"


def test_amd_visibility_is_kept_in_its_own_variable():
    gpus, _, var = discover_gpus({"ROCR_VISIBLE_DEVICES": "2,3"})
    assert gpus == ("2", "3") and var == "ROCR_VISIBLE_DEVICES"


def test_two_nodes_of_four_gpus_with_the_master_on_the_first():
    # 9 ranks: node a holds the master and 4 workers, node b 4 workers.
    places = node(0, 5, EIGHT[:4], "a") + node(5, 4, EIGHT[:4], "b")
    bindings, warnings = assign(places)
    assert 0 not in bindings  # the master takes no GPU
    assert {r: b.gpus for r, b in bindings.items()} == {
        1: ("0",), 2: ("1",), 3: ("2",), 4: ("3",), 5: ("0",), 6: ("1",), 7: ("2",), 8: ("3",)}
    assert warnings == []


def test_a_node_with_the_master_has_one_worker_fewer_and_says_a_gpu_is_idle():
    places = node(0, 4, EIGHT[:4], "a") + node(4, 4, EIGHT[:4], "b")  # 4 ranks per node
    bindings, warnings = assign(places)
    assert [bindings[r].gpus for r in (1, 2, 3)] == [("0",), ("1",), ("2",)]
    assert warnings == ["a: 1 of 4 GPUs left idle (3 workers); launch 1 more rank on this node"]


def test_inherited_gpus_4_to_7_are_shared_without_overlap():
    gpus, _, _ = discover_gpus({"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    bindings, _ = assign(node(0, 5, gpus, "a"))
    assert [bindings[r].label for r in range(1, 5)] == ["4", "5", "6", "7"]


def test_two_gpus_per_trial_groups_ranks_around_pairs_of_gpus():
    places = node(0, 9, EIGHT, "a")  # master + 8 workers, one per GPU
    bindings, warnings = assign(places, gpus_per_trial=2)
    leaders = [r for r, b in bindings.items() if b.role == WORKER]
    assert leaders == [1, 3, 5, 7]
    assert [bindings[r].gpus for r in leaders] == [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]
    assert all(bindings[r].role == MEMBER and bindings[r].leader == r - 1 for r in (2, 4, 6, 8))
    used = [g for r in leaders for g in bindings[r].gpus]
    assert len(used) == len(set(used)) == 8 and warnings == []


def test_two_gpus_per_trial_on_two_nodes_with_the_master_on_the_first():
    places = node(0, 5, EIGHT[:4], "a") + node(5, 4, EIGHT[:4], "b")
    bindings, warnings = assign(places, gpus_per_trial=2)
    # Node a has 4 workers for 2 groups; node b likewise.
    assert {r: b.gpus for r, b in bindings.items() if b.role == WORKER} == {
        1: ("0", "1"), 3: ("2", "3"), 5: ("0", "1"), 7: ("2", "3")}
    assert warnings == []


def test_odd_ranks_in_groups_leave_a_spare_and_say_so():
    places = node(0, 4, EIGHT[:4], "a")  # master + 3 workers, 2 GPUs per trial: 2 groups of 1
    bindings, warnings = assign(places, gpus_per_trial=2)
    assert [bindings[r].role for r in (1, 2, 3)] == [WORKER, WORKER, SPARE]
    assert bindings[1].gpus == ("0", "1") and bindings[2].gpus == ("2", "3") and bindings[3].gpus == ()
    assert "ranks 3 take no trials" in warnings[0]


def test_more_gpus_per_trial_than_a_node_has_is_bad_input():
    with pytest.raises(ConfigError, match=r"workers.gpus_per_trial: a has only 2 GPUs .* \(got gpus_per_trial = 4\)"):
        assign(node(0, 3, EIGHT[:2], "a"), gpus_per_trial=4)


def test_two_workers_per_gpu_share_it_and_each_gets_half_its_memory():
    bindings, warnings = assign(node(0, 5, ("0", "1"), "a"), workers_per_gpu=2)
    assert [bindings[r].label for r in range(1, 5)] == ["0", "1", "0", "1"]
    assert all(bindings[r].memory_fraction == 0.5 for r in range(1, 5)) and warnings == []


def test_more_workers_than_gpus_warns_and_caps_each_share():
    bindings, warnings = assign(node(0, 5, ("0", "1"), "a"))
    assert [bindings[r].label for r in range(1, 5)] == ["0", "1", "0", "1"]
    assert bindings[1].memory_fraction == 0.5
    assert warnings == ["a: 4 workers share 2 GPUs (2 on some GPUs, workers_per_gpu = 1); launch fewer ranks or "
                        "raise workers_per_gpu"]


def test_without_gpus_each_worker_gets_its_share_of_the_cpus():
    bindings, warnings = assign(node(0, 9, (), "laptop", cpus=8))
    assert all(b.gpus == () and b.threads == 1 for b in bindings.values()) and warnings == []
    bindings, _ = assign(node(0, 3, (), "laptop", cpus=8))
    assert [bindings[r].threads for r in (1, 2)] == [4, 4]
    bindings, _ = assign(node(0, 3, (), "laptop", cpus=8), threads=3)
    assert bindings[1].threads == 3


def test_one_process_is_master_and_worker_and_takes_the_first_gpu():
    bindings, _ = assign(node(0, 1, ("0", "1"), "a"))
    assert bindings[0].gpus == ("0",)


def test_the_map_is_one_line_per_node():
    places = node(0, 5, EIGHT[:4], "a") + node(5, 4, EIGHT[:4], "b")
    lines = describe(places, assign(places, gpus_per_trial=2)[0])
    assert lines == ["a (4 GPUs from test): r0 master, r1 GPU 0,1, r2 in r1's group, r3 GPU 2,3, r4 in r3's group",
                     "b (4 GPUs from test): r5 GPU 0,1, r6 in r5's group, r7 GPU 2,3, r8 in r7's group"]


def test_binding_sets_visibility_memory_growth_and_threads_but_keeps_what_the_user_set():
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6,7", "OMP_NUM_THREADS": "7"}
    apply_binding(Binding(2, WORKER, ("5",), threads=4), env)
    assert env["CUDA_VISIBLE_DEVICES"] == "5" and env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env["OMP_NUM_THREADS"] == "7" and env["TF_NUM_INTRAOP_THREADS"] == "4"
    assert "HPC_HPO_GPU_MEMORY_FRACTION" not in env
    shared: dict[str, str] = {}
    apply_binding(Binding(2, WORKER, ("0",), memory_fraction=0.5), shared)
    assert shared["HPC_HPO_GPU_MEMORY_FRACTION"] == "0.5" and "TF_FORCE_GPU_ALLOW_GROWTH" not in shared
    member: dict[str, str] = {"CUDA_VISIBLE_DEVICES": "0,1"}
    apply_binding(Binding(2, MEMBER, ("0", "1"), leader=1), member)
    assert member["CUDA_VISIBLE_DEVICES"] == ""  # a group member keeps its hands off the leader's GPUs
    cpu: dict[str, str] = {}
    apply_binding(Binding(1, threads=2), cpu)
    assert "CUDA_VISIBLE_DEVICES" not in cpu and cpu["OMP_NUM_THREADS"] == "2"
