"""machine.json: which CPU and kernels each start of a run used (docs/cpu_runs.md, "base C")."""

import json

import torch

from zprl.common.machine import FILE_NAME, append_machine_record, cpu_model


def test_fresh_start_writes_one_entry_with_the_kernel_pins(tmp_path, monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    append_machine_record(str(tmp_path), 0, fresh=True)
    entries = json.loads((tmp_path / FILE_NAME).read_text())
    assert len(entries) == 1
    e = entries[0]
    assert e["started_at_step"] == 0
    assert e["env"]["MKL_CBWR"] == "AVX2" and "ONEDNN_MAX_CPU_ISA" not in e["env"]
    assert e["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert e["torch_threads"] == torch.get_num_threads() and e["cpu"] == cpu_model()


def test_resume_appends_and_a_fresh_start_begins_again(tmp_path):
    append_machine_record(str(tmp_path), 0, fresh=True)
    append_machine_record(str(tmp_path), 2500, fresh=False)
    entries = json.loads((tmp_path / FILE_NAME).read_text())
    assert [e["started_at_step"] for e in entries] == [0, 2500]
    append_machine_record(str(tmp_path), 0, fresh=True)
    assert len(json.loads((tmp_path / FILE_NAME).read_text())) == 1


def test_a_cut_file_does_not_stop_the_run(tmp_path):
    (tmp_path / FILE_NAME).write_text('[{"started_at_step": 0,')
    append_machine_record(str(tmp_path), 100, fresh=False)
    assert [e["started_at_step"] for e in json.loads((tmp_path / FILE_NAME).read_text())] == [100]


def test_cpu_model_reads_the_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t: avx2\n")
    assert cpu_model(str(info)) == "Some CPU 9000"
