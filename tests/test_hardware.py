"""Running where researchers run: dtype auto, device placement, mixed-adapter batches, Ray on
(fake) GPUs, and progress a person can read."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from rich.console import Console

from conftest import MINIMAL, MORE_SOURCES, TINY_TRAIN
from traitlens.config import load_study
from traitlens.config.schema import BaseModelSpec
from traitlens.data.load import prepare_study
from traitlens.errors import TraitlensError
from traitlens.execution.local import run_plan
from traitlens.execution.plan import plan_study
from traitlens.models import device as hw
from traitlens.models.device import Hardware, HardwareWarning, Placement, resolve_dtype
from traitlens.models.fake import FakeScorer
from traitlens.models.scorer import ChoiceRequest, GenerateRequest
from traitlens.progress import JobProgress, StepMeter
from traitlens.store import Store

QUIET = Console(quiet=True)
NATIVE = Hardware("cpu", True, "a CPU with AVX512-BF16")
EMULATED = Hardware("cpu", False, "a CPU with AVX2 only")
AUTO = MINIMAL.replace("  dtype: float32\n", "")  # both dtypes left at their default, auto


def test_auto_is_bfloat16_only_where_the_hardware_runs_it_natively():
    assert resolve_dtype("auto", NATIVE, "training.dtype") == "bfloat16"
    assert resolve_dtype("auto", EMULATED, "training.dtype") == "float32"
    assert resolve_dtype("float32", NATIVE, "training.dtype") == "float32"


@pytest.mark.parametrize("native", [True, False])
def test_the_cpu_capability_check_decides_auto(monkeypatch, native):
    """Both kinds of CPU, simulated at oneDNN's own check."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    hw.local_hardware.cache_clear()
    try:
        hardware = hw.local_hardware("cpu")
        assert hardware.bf16_native is native and hardware.device == "cpu" and "cores" in hardware.name
        assert resolve_dtype("auto", hardware, "evaluation.dtype") == ("bfloat16" if native else "float32")
    finally:
        hw.local_hardware.cache_clear()


def test_explicit_bfloat16_on_emulating_hardware_warns_once_with_the_slowdown_and_the_fix(monkeypatch):
    hw._warn_emulated.cache_clear()
    monkeypatch.setattr(hw, "bf16_slowdown", lambda device: 38.4)
    with pytest.warns(HardwareWarning, match=r"training.dtype: bfloat16 is emulated on cpu .*38x slower.*"
                                             r"Set training.dtype: auto"):
        assert resolve_dtype("bfloat16", EMULATED, "training.dtype") == "bfloat16"  # kept: it was asked for
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_dtype("bfloat16", EMULATED, "training.dtype")  # once per process
        resolve_dtype("bfloat16", NATIVE, "evaluation.dtype")  # native: nothing to say
    hw._warn_emulated.cache_clear()


def test_the_slowdown_is_a_measurement():
    assert 0 < hw.bf16_slowdown("cpu", size=32, repeats=2) < float("inf")


def test_auto_resolves_before_keys_so_precisions_never_share_results(write_study):
    study = load_study(write_study(AUTO))
    native, emulated = plan_study(study, NATIVE), plan_study(study, EMULATED)
    assert (native.study.training.dtype, native.study.evaluation.dtype) == ("bfloat16", "bfloat16")
    assert (emulated.study.training.dtype, emulated.study.evaluation.dtype) == ("float32", "float32")
    assert not {j.key for j in native.jobs} & {j.key for j in emulated.jobs}
    assert {j.spec["dtype"] for j in emulated.eval_jobs} == {"float32"}
    # auto resolved is the same request as the dtype written out: finished work is reused.
    explicit = load_study(write_study(MINIMAL, name="explicit.yaml"))
    assert [j.key for j in plan_study(explicit, NATIVE).jobs] == [j.key for j in emulated.jobs]


def test_the_dtype_used_is_stored_with_each_cell(write_study):
    study = load_study(write_study(AUTO))
    _, targets = prepare_study(study)
    base_only = lambda job: job.kind == "eval" and job.needs is None  # noqa: E731
    for hardware, dtype in ((EMULATED, "float32"), (NATIVE, "bfloat16")):
        plan = plan_study(study, hardware)
        store = Store(study.store)
        assert not run_plan(plan, store, {}, targets, QUIET, make_scorer=lambda s: FakeScorer(), only=base_only).failed
        for job in filter(base_only, plan.jobs):
            assert store.cell(job.key)["meta"]["dtype"] == dtype == job.spec["dtype"]


def test_a_gpu_asked_for_where_torch_sees_none_is_a_clear_error(write_study):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(TraitlensError, match=r"execution.device: 'cuda:1' asked for a GPU.*sees no CUDA device"):
        hw.resolve_device("cuda:1")
    study = load_study(write_study(MINIMAL + "execution: {device: cuda}\n"))
    with pytest.raises(TraitlensError, match="sees no CUDA device"):
        plan_study(study)  # before any job starts, not inside one


def test_device_setting_is_validated(write_study):
    from traitlens.errors import ConfigError

    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        load_study(write_study(MINIMAL + "execution: {device: gpu0}\n"))


def test_device_cpu_explicitly_trains_and_scores_on_the_cpu(write_study, tiny_model):
    text = TINY_TRAIN.format(base=tiny_model) + "execution: {device: cpu}\n"
    study = load_study(write_study(text))
    plan = plan_study(study)
    store = Store(study.store)
    sources, targets = prepare_study(study)
    assert not run_plan(plan, store, sources, targets, QUIET).failed
    [train] = plan.train_jobs
    meta = store.adapter_meta(train.key)
    assert meta["device"] == "cpu" and meta["dtype"] == "float32" and meta["paths"]["sibling_groups"]
    assert {store.cell(j.key)["meta"]["device"] for j in plan.eval_jobs} == {"cpu"}


def test_gpu_batches_are_sized_from_free_memory_and_width(tiny_model, monkeypatch):
    from traitlens.models.hf import MAX_GPU_ROWS, HFScorer, rows_for_memory

    scorer = HFScorer(BaseModelSpec(name=str(tiny_model)), device="cpu")
    config = scorer._lm.config
    # auto on a CPU: scoring batches of about 512 tokens (at most 16 rows), generation 64 rows
    assert [scorer.rows_per_batch(w) for w in (20, 100, 300, 900)] == [16, 5, 1, 1]
    assert scorer.rows_per_batch(100, generating=True) == 64
    scorer.device = torch.device("cuda:0")  # as on a GPU: the rows follow the memory it reports free
    free = {"bytes": 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free["bytes"], 80 * 2**30))
    narrow, wide = scorer.rows_per_batch(64), scorer.rows_per_batch(2048)
    assert narrow == rows_for_memory(2**29, 64, config, 4) and 1 <= wide < narrow <= MAX_GPU_ROWS
    free["bytes"] = 2**24
    assert scorer.rows_per_batch(2048) < wide
    for budget, width in ((2**20, 4096), (2**34, 16), (2**30, 512)):
        rows = rows_for_memory(budget, width, config, 2)
        assert 1 <= rows <= MAX_GPU_ROWS
        assert rows == 1 or rows == MAX_GPU_ROWS or rows * width * 2 < budget  # within the budget
    scorer.batch_size = 3
    assert scorer.rows_per_batch(2048) == 3  # a number is taken as given


def _random_lora(folder, model_path, seed):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    model.save_pretrained(folder)
    return folder


def test_mixed_adapter_batches_score_as_one_adapter_at_a_time(tiny_model, tmp_path):
    """Single-token labels, multi-token options and generation: base and two adapters in one
    batch give what each gives alone (merged into the weights, float32)."""
    from traitlens.models.hf import HFScorer

    spec = BaseModelSpec(name=str(tiny_model))
    paths = {key: _random_lora(tmp_path / key, tiny_model, seed) for seed, key in enumerate(("one", "two"))}
    alone, mixed = HFScorer(spec, batch_size=3), HFScorer(spec, batch_size=3, mixed_adapters=True)
    assert not alone.mixed and mixed.mixed  # a CPU keeps one adapter at a time unless told
    for key, path in paths.items():
        alone.use_adapter(key, path)
        mixed.use_adapter(key, path)
    choices = [ChoiceRequest(f"Review {i}: {'good ' * i}film. Sentiment:", (" positive", " negative"))
               for i in range(5)]
    choices += [ChoiceRequest(f"Question {i}: where is the bank? Answer:", (" by the river", " in town now", " no"))
                for i in range(4)]
    generate = [GenerateRequest(f"Count: {i} {i + 1}", 6, ("\n",)) for i in range(4)]
    models = [None, "one", "two"]
    together = mixed.loglikelihood_mixed(choices, models)
    generated = mixed.generate_mixed(generate, models)
    for key, scores, texts in zip(models, together, generated):
        alone.use_adapter(key)
        for one, other in zip(alone.loglikelihood(choices), scores):
            assert one.tokens == other.tokens
            assert one.logprobs == pytest.approx(other.logprobs, abs=1e-4)
        assert alone.generate(generate) == texts
    assert together[1] != together[0] and together[2] != together[1]  # the adapters do differ


def test_a_mixing_scorer_gets_each_target_s_models_in_one_call(write_study, tiny_model):
    """The local executor sends a mixing scorer one call per target for all its models; the
    cells are those of one model at a time."""
    sections = MORE_SOURCES
    text = TINY_TRAIN.format(base=tiny_model).replace("targets:\n", sections, 1)
    cells = {}
    for mixed in (False, True):
        study = load_study(write_study(text + f"store: store-{mixed}\n", name=f"{mixed}.yaml"))
        plan = plan_study(study)
        store = Store(study.store)
        sources, targets = prepare_study(study)
        run_plan(plan, store, sources, targets, QUIET, only=lambda job: job.kind == "train")
        scorer = FakeScorer(mixed=mixed)
        assert not run_plan(plan, store, sources, targets, QUIET, make_scorer=lambda s: scorer).failed
        cells[mixed] = {j.key: store.items(j.key) for j in plan.eval_jobs}
        # The guard's two probe calls, once per adapter; then the scoring itself.
        scoring = scorer.calls - 2 * len(plan.train_jobs)
        assert scoring == (len(study.targets) if mixed else len(plan.eval_jobs))
        assert {store.cell(j.key)["meta"]["mixed_batch"] for j in plan.eval_jobs} == {mixed}
    assert cells[True] == cells[False]


def test_ray_runs_each_job_on_the_gpus_it_assigned(write_study, tiny_model):
    """A local Ray cluster declaring two fake GPUs: every job gets one of them (its
    CUDA_VISIBLE_DEVICES set to it); torch sees no CUDA device here, so the work runs on CPUs."""
    import ray

    from traitlens.execution.distributed import run_plan_ray

    text = TINY_TRAIN.format(base=tiny_model)  # one train job and two eval jobs
    study = load_study(write_study(text + "execution: {executor: ray, cpus_per_job: 1, gpus_per_train_job: 1, "
                                          "gpus_per_eval_job: 1}\n"))
    plan = plan_study(study)
    store = Store(study.store)
    sources, targets = prepare_study(study)
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        summary = run_plan_ray(plan, store, sources, targets, QUIET)
        assert not summary.failed and summary.ran == len(plan.jobs)
        placements = [store.adapter_meta(j.key) for j in plan.train_jobs]
        placements += [store.cell(j.key)["meta"] for j in plan.eval_jobs]
        for placement in placements:
            assert len(placement["ray_gpus"]) == 1 and placement["ray_gpus"][0] in {"0", "1"}
            assert placement["cuda_visible_devices"] == placement["ray_gpus"][0]
        assert {p["device"] for p in placements} == {"cpu"}
    finally:
        ray.shutdown()


def test_ray_refuses_jobs_that_need_more_gpus_than_the_cluster_has(write_study, tiny_model):
    import ray

    from traitlens.execution.distributed import run_plan_ray

    text = TINY_TRAIN.format(base=tiny_model) + "execution: {executor: ray, gpus_per_train_job: 2}\n"
    study = load_study(write_study(text))
    sources, targets = prepare_study(study)
    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        with pytest.raises(TraitlensError, match=r"gpus_per_train_job: 2, but the Ray cluster has 1 GPU"):
            run_plan_ray(plan_study(study), Store(study.store), sources, targets, QUIET)
    finally:
        ray.shutdown()


def test_off_a_terminal_a_silent_job_prints_its_status_within_the_heartbeat():
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    progress = JobProgress(console, 3, heartbeat_s=20)
    meter = StepMeter(progress, "train movie (seed 0)", total=24, unit="steps")
    meter.advance(1, "loss 0.700, 300 tok/s")
    assert not progress.beat(progress.last_line + 19, every=20)
    assert progress.beat(progress.last_line + 21, every=20)
    line = console.file.getvalue()
    assert "train movie (seed 0): 1/24 steps, loss 0.700, 300 tok/s, " in line and " s left" in line
    items = StepMeter(progress, "eval base on movie", total=48)
    items.advance(16)
    assert progress.beat(progress.last_line + 20, every=20)
    assert "eval base on movie: 16/48 items, " in console.file.getvalue() and "items/s" in console.file.getvalue()


GPU = Hardware("cuda:0", True, "a GPU with bfloat16")


def test_a_ray_task_holding_no_gpu_runs_on_the_cpu(write_study):
    """Ray no longer hides GPUs from a zero-GPU task: under `auto` it would land on cuda:0."""
    ray = "execution: {executor: ray, device: auto, gpus_per_train_job: 1, gpus_per_eval_job: 0}\n"
    plan = plan_study(load_study(write_study(MINIMAL + ray)), {"train": GPU, "eval": EMULATED})
    assert {job.settings.placement.device for job in plan.eval_jobs} == {"cpu"}
    assert {job.settings.placement.device for job in plan.train_jobs} == {"auto"}
    local = plan_study(load_study(write_study(MINIMAL + "execution: {device: auto}\n", name="local.yaml")))
    assert {job.settings.placement.device for job in local.jobs} == {"auto"}  # the local executor: one device for all


def test_each_job_kind_resolves_its_dtype_for_its_own_device(write_study, monkeypatch):
    """Training on a GPU, evaluation on a CPU without native bfloat16: each gets its own dtype,
    probed with its own resources."""
    from traitlens.execution import plan as planning

    ray = "execution: {executor: ray, address: auto, gpus_per_train_job: 1, gpus_per_eval_job: 0}\n"
    study = load_study(write_study(AUTO + ray))
    asked = []
    monkeypatch.setattr(planning, "study_hardware", lambda s, kind: asked.append(kind) or (GPU if kind == "train"
                                                                                           else EMULATED))
    placements = planning.study_placements(study)
    assert {kind: p.dtype for kind, p in placements.items()} == {
        "train": "bfloat16", "eval": "float32", "features": "float32", "probe": "float32"}
    assert sorted(asked) == ["eval", "features", "train"]  # the probe is float32 whatever the hardware
    assert placements["eval"].device == "cpu" and placements["features"].device == "auto"
    assert placements["train"].threads == placements["eval"].threads == 1 and placements["features"].threads is None
    assert placements["train"].deterministic and placements["probe"].deterministic
    assert not placements["eval"].deterministic


def test_the_features_are_scored_in_the_dtype_of_the_machine_that_computes_them(write_study, monkeypatch):
    """A Ray cluster whose GPU workers run bfloat16, driven from a CPU that emulates it: the
    features (scored here, on the driver) are float32, and their key says so."""
    from traitlens.execution import plan as planning
    from traitlens.recipes.analyses import features_key

    ray = "execution: {executor: ray, address: auto, gpus_per_train_job: 1, gpus_per_eval_job: 1}\n"
    study = load_study(write_study(AUTO + ray))
    monkeypatch.setattr(planning, "study_hardware", lambda s, kind: EMULATED if kind in ("features", "probe") else GPU)
    plan = plan_study(study)
    assert plan.study.evaluation.dtype == "bfloat16" and plan.placements["features"].dtype == "float32"
    local = plan_study(load_study(write_study(AUTO, name="local.yaml")), EMULATED)
    assert features_key(plan) == features_key(local)  # the same datasets and base, scored in float32 both times


def test_bf16_support_is_read_off_the_device_asked_about(monkeypatch):
    """cuda:1 an older GPU than the current cuda:0: the answer is cuda:1's."""
    capability = {0: (9, 0), 1: (7, 5)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability[index or 0])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # the current one
    assert hw.bf16_native("cuda:0") is True and hw.bf16_native("cuda:1") is False and hw.bf16_native("cuda") is True


def test_the_probe_closes_a_ray_connection_it_opened(write_study, monkeypatch):
    import sys
    import types

    from traitlens.execution.distributed import cluster_hardware

    calls = []
    fake = types.SimpleNamespace(
        is_initialized=lambda: False, init=lambda **kwargs: calls.append("init"),
        shutdown=lambda: calls.append("shutdown"), get=lambda ref: ref,
        remote=lambda **resources: (calls.append(resources) or (lambda f: types.SimpleNamespace(remote=f))))
    monkeypatch.setitem(sys.modules, "ray", fake)
    study = load_study(write_study(MINIMAL + "execution: {executor: ray, address: auto, gpus_per_eval_job: 0.5}\n"))
    hardware = cluster_hardware(study, "eval")
    assert hardware.device == "cpu" or hardware.device.startswith("cuda")
    assert calls[0] == "init" and calls[1]["num_gpus"] == 0.5 and calls[-1] == "shutdown"
    calls.clear()
    fake.is_initialized = lambda: True  # a cluster the caller joined: left open
    cluster_hardware(study, "train")
    assert "shutdown" not in calls and calls[0]["num_gpus"] == 0


def test_the_gradient_probe_runs_where_its_placement_says(write_study):
    """It ignored `execution.device` (and would have failed at `.numpy()` on a GPU)."""
    from traitlens.forecast.gradient import gradient_affinity

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    study = load_study(write_study(MINIMAL + "execution: {device: cuda}\n"))
    with pytest.raises(TraitlensError, match="sees no CUDA device"):
        gradient_affinity(study, Placement("probe", "cuda"), {}, {}, 1, set())


def test_device_memory_is_given_back_after_each_training_job(write_study, tiny_model, monkeypatch):
    """Evaluation runs in the process that just trained: the allocator's cache would look used."""
    text = TINY_TRAIN.format(base=tiny_model)
    study = load_study(write_study(text))
    sources, targets = prepare_study(study)
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # as after a job on a GPU
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    plan = plan_study(study)
    assert not run_plan(plan, Store(study.store), sources, targets, QUIET,
                        make_scorer=lambda s: FakeScorer(), only=lambda job: job.kind == "train").failed
    assert len(emptied) == len(plan.train_jobs) >= 1


def test_a_training_task_checkpoints_in_the_store_only_where_its_node_sees_it(tmp_path):
    from traitlens.execution.distributed import checkpoint_folder

    store = tmp_path / "store" / "artifacts"
    store.mkdir(parents=True)
    here = str(store / "checkpoints" / "abc123")
    assert checkpoint_folder(here, tmp_path / "local") == store / "checkpoints" / "abc123"
    elsewhere = str(tmp_path / "another-node" / "artifacts" / "checkpoints" / "abc123")  # the driver's disk
    assert checkpoint_folder(elsewhere, tmp_path / "local") == tmp_path / "local" / "abc123"


def test_a_base_is_read_straight_onto_a_gpu(tiny_model, monkeypatch):
    """Read in its dtype with a device map, never into host memory in float32 first; on a CPU
    as before."""
    from transformers import AutoModelForCausalLM

    from traitlens.models.load import load_base

    asked = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kwargs: asked.append(kwargs) or real(path, dtype=kwargs["dtype"]))
    spec = BaseModelSpec(name=str(tiny_model))
    model, _ = load_base(spec, "bfloat16", torch.device("cuda:1"))
    assert asked[-1]["device_map"] == "cuda:1" and asked[-1]["dtype"] == torch.bfloat16
    assert next(model.parameters()).dtype == torch.bfloat16
    load_base(spec, "float32", torch.device("cpu"))
    assert "device_map" not in asked[-1]


def test_a_placement_sets_threads_and_determinism_while_it_runs_and_gives_memory_back(monkeypatch):
    released = []
    monkeypatch.setattr(hw, "release_device_memory", lambda: released.append(True))
    threads = torch.get_num_threads()
    inside = []
    with Placement("train", "cpu", threads=1, deterministic=True).running():
        inside.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
    assert inside == [(1, True)] and released == [True]
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError), Placement("eval", "cpu").running():  # a failing job gives its memory back too
        assert not torch.are_deterministic_algorithms_enabled()
        raise RuntimeError("the job failed")
    assert released == [True, True] and torch.get_num_threads() == threads


def test_the_memory_budget_is_read_for_the_placement_s_own_device(monkeypatch):
    """Half of what that GPU reports free; an eighth of a CPU machine's memory."""
    from types import SimpleNamespace

    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: asked.append(device) or (8 * 2**30, 80 * 2**30))
    monkeypatch.setattr("psutil.virtual_memory", lambda: SimpleNamespace(total=64 * 2**30))
    placement = Placement("eval", "cuda:1", "bfloat16")
    assert placement.memory_budget(torch.device("cuda:1")) == 4 * 2**30 and asked == [torch.device("cuda:1")]
    assert placement.memory_budget(torch.device("cpu")) == 8 * 2**30
