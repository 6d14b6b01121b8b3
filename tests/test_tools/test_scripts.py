"""The launch scripts and tools/test.py's options, as mmseg 1.2 has them.

The shell scripts run against a fake ``srun`` / ``torchrun`` on PATH that
records its arguments; the recorded train.py / test.py command line is then
parsed by the tool itself, so a script that dispatches wrongly fails here.
"""
import importlib.util
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from helpers import DEMO_CONFIG, REPO, TOOLS
from helpers.configs import demo_config, run_config, unique_names

FLAGSHIP = REPO / 'configs' / 'upernet_r50_ade20k_infobatch.py'
LAUNCH_ENV = ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS', 'NNODES',
              'NODE_RANK', 'PORT', 'MASTER_ADDR', 'PYTHON')

# tools/test.py imports train.py from its own folder, which Python puts
# first on sys.path when it runs the script; loaded here, it needs the same.
sys.path.insert(0, str(TOOLS))


def _load_tool(name, folder=TOOLS):
    # tools/test.py as a module named 'test' would clash with the stdlib's
    # test package, so each tool gets a name of its own.
    spec = importlib.util.spec_from_file_location(f'tool_{name}',
                                                  folder / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def train_tool():
    return _load_tool('train')


@pytest.fixture(scope='module')
def test_tool():
    return _load_tool('test')


@pytest.fixture(autouse=True)
def _local_rank(monkeypatch):
    # parse_args exports LOCAL_RANK when it is unset; keep that local.
    monkeypatch.setenv('LOCAL_RANK', '0')


def launch(tmp_path, script, args, launcher, expect_rc=0, **env):
    """Run ``tools/<script>`` with a fake ``launcher`` first on PATH.

    Returns:
        tuple[list[str], str]: The launcher's arguments and the PYTHONPATH
        it was started with; ``None`` for both if it was never started.
    """
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / f'{launcher}.args'
    fake = bin_dir / launcher
    fake.write_text('#!/usr/bin/env bash\n'
                    'printf "%s\\0" "$@" > "$RECORD"\n'
                    'printf "%s" "$PYTHONPATH" > "$RECORD.pythonpath"\n')
    fake.chmod(0o755)
    full_env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    full_env.update(
        env,
        RECORD=str(record),
        PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    result = subprocess.run(
        ['bash', str(TOOLS / script)] + list(args),
        env=full_env,
        capture_output=True,
        text=True,
        cwd=tmp_path)
    assert result.returncode == expect_rc, result.stderr
    if not record.exists():
        return None, None
    words = record.read_text().split('\0')[:-1]
    return words, (tmp_path / f'{launcher}.args.pythonpath').read_text()


def test_slurm_train_dispatches_to_train_py(tmp_path, train_tool):
    words, pythonpath = launch(
        tmp_path,
        'slurm_train.sh', [
            'gpu', 'seg', 'cfg.py', 'work_dirs/run1', '--amp', '--cfg-options',
            'train_dataloader.sampler.ratio=0.3'
        ],
        'srun',
        GPUS='16',
        GPUS_PER_NODE='8',
        CPUS_PER_TASK='4',
        SRUN_ARGS='--quotatype=auto --time=10')
    train_py = str(TOOLS / 'train.py')
    assert words == [
        '-p', 'gpu', '--job-name=seg', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=4', '--kill-on-bad-exit=1',
        '--quotatype=auto', '--time=10', 'python', '-u', train_py, 'cfg.py',
        '--launcher=slurm', '--work-dir=work_dirs/run1', '--amp',
        '--cfg-options', 'train_dataloader.sampler.ratio=0.3'
    ]
    assert pythonpath.split(os.pathsep)[0] == str(REPO)
    args = train_tool.parse_args(words[words.index(train_py) + 1:])
    assert (args.config, args.launcher, args.work_dir, args.amp) == \
        ('cfg.py', 'slurm', 'work_dirs/run1', True)
    assert args.cfg_options == {'train_dataloader.sampler.ratio': 0.3}


def test_slurm_train_defaults_and_options_as_fourth_argument(
        tmp_path, train_tool):
    # mmseg's own usage: no WORK_DIR, options straight after the config.
    words, _ = launch(tmp_path, 'slurm_train.sh',
                      ['p', 'j', 'cfg.py', '--work-dir', 'w', '--resume'],
                      'srun')
    assert words[:8] == [
        '-p', 'p', '--job-name=j', '--gres=gpu:8', '--ntasks=8',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1'
    ]
    assert words[8:] == [
        'python', '-u',
        str(TOOLS / 'train.py'), 'cfg.py', '--launcher=slurm', '--work-dir',
        'w', '--resume'
    ]
    args = train_tool.parse_args(words[11:])
    assert (args.work_dir, args.resume, args.launcher) == ('w', True, 'slurm')
    words, _ = launch(
        tmp_path,
        'slurm_train.sh', ['p', 'j', 'cfg.py'],
        'srun',
        PYTHON='python3')
    assert words[8:] == [
        'python3', '-u',
        str(TOOLS / 'train.py'), 'cfg.py', '--launcher=slurm'
    ]


def test_slurm_test_dispatches_to_test_py(tmp_path, test_tool):
    words, pythonpath = launch(
        tmp_path,
        'slurm_test.sh',
        ['gpu', 'eval', 'cfg.py', 'iter_8.pth', '--out', 'preds', '--tta'],
        'srun',
        GPUS='2',
        GPUS_PER_NODE='2',
        SRUN_ARGS='--exclusive')
    test_py = str(TOOLS / 'test.py')
    assert words == [
        '-p', 'gpu', '--job-name=eval', '--gres=gpu:2', '--ntasks=2',
        '--ntasks-per-node=2', '--cpus-per-task=5', '--kill-on-bad-exit=1',
        '--exclusive', 'python', '-u', test_py, 'cfg.py', 'iter_8.pth',
        '--launcher=slurm', '--out', 'preds', '--tta'
    ]
    assert pythonpath.split(os.pathsep)[0] == str(REPO)
    args = test_tool.parse_args(words[words.index(test_py) + 1:])
    assert (args.config, args.checkpoint, args.launcher, args.out,
            args.tta) == ('cfg.py', 'iter_8.pth', 'slurm', 'preds', True)


def test_dist_test_dispatches_through_torchrun(tmp_path, test_tool):
    words, pythonpath = launch(
        tmp_path,
        'dist_test.sh', ['cfg.py', 'iter_8.pth', '4', '--show-dir', 'vis'],
        'torchrun',
        NNODES='2',
        NODE_RANK='1',
        PORT='29123',
        MASTER_ADDR='10.0.0.2')
    test_py = str(TOOLS / 'test.py')
    assert words == [
        '--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.2',
        '--nproc_per_node=4', '--master_port=29123', test_py, 'cfg.py',
        'iter_8.pth', '--launcher', 'pytorch', '--show-dir', 'vis'
    ]
    assert pythonpath.split(os.pathsep)[0] == str(REPO)
    args = test_tool.parse_args(words[words.index(test_py) + 1:])
    assert (args.launcher, args.show_dir) == ('pytorch', 'vis')
    words, _ = launch(tmp_path, 'dist_test.sh', ['c.py', 'k.pth', '1'],
                      'torchrun')
    assert words[:5] == [
        '--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
        '--nproc_per_node=1', '--master_port=29600'
    ]


def test_dist_train_dispatches_through_torchrun(tmp_path, train_tool):
    words, _ = launch(tmp_path, 'dist_train.sh', ['cfg.py', '8', '--resume'],
                      'torchrun')
    train_py = str(TOOLS / 'train.py')
    assert words == [
        '--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1',
        '--nproc_per_node=8', '--master_port=29500', train_py, 'cfg.py',
        '--launcher', 'pytorch', '--resume'
    ]
    args = train_tool.parse_args(words[words.index(train_py) + 1:])
    assert (args.launcher, args.resume) == ('pytorch', True)


def test_dist_train_passes_the_infobatch_flag(tmp_path, train_tool):
    words, _ = launch(tmp_path, 'dist_train.sh', [
        'cfg.py', '2', '--infobatch', '--infobatch-options', 'ratio=0.3',
        'delta=0.9'
    ], 'torchrun')
    train_py = str(TOOLS / 'train.py')
    args = train_tool.parse_args(words[words.index(train_py) + 1:])
    assert (args.config, args.launcher, args.infobatch) == \
        ('cfg.py', 'pytorch', True)
    assert args.infobatch_options == dict(ratio=0.3, delta=0.9)


@pytest.mark.parametrize('script,args,launcher', [
    ('slurm_train.sh', ['p', 'j'], 'srun'),
    ('slurm_test.sh', ['p', 'j', 'cfg.py'], 'srun'),
    ('dist_test.sh', ['cfg.py', 'k.pth'], 'torchrun'),
    ('dist_train.sh', ['cfg.py'], 'torchrun'),
])
def test_scripts_refuse_missing_arguments(tmp_path, script, args, launcher):
    words, _ = launch(tmp_path, script, args, launcher, expect_rc=1)
    assert words is None


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / 'iter_8.pth'
    path.write_bytes(b'')
    return str(path)


def test_test_tool_options_set_the_config(test_tool, checkpoint, tmp_path):
    cfg = test_tool.build_config(
        test_tool.parse_args([
            str(DEMO_CONFIG), checkpoint, '--out', 'preds', '--show-dir',
            'vis', '--work-dir',
            str(tmp_path / 'wd'), '--cfg-options',
            'test_dataloader.batch_size=2'
        ]))
    assert cfg.load_from == checkpoint
    assert cfg.work_dir == str(tmp_path / 'wd')
    assert cfg.launcher == 'none'
    assert cfg.test_dataloader.batch_size == 2
    # --out: IoUMetric writes the label maps there.
    assert cfg.test_evaluator.output_dir == 'preds'
    # --show-dir: the hook draws, the visualizer saves, nothing is shown.
    assert cfg.default_hooks.visualization.draw is True
    assert 'show' not in cfg.default_hooks.visualization
    assert cfg.visualizer.save_dir == 'vis'


def test_test_tool_show_and_plain(test_tool, checkpoint):
    cfg = test_tool.build_config(
        test_tool.parse_args(
            [str(DEMO_CONFIG), checkpoint, '--show', '--wait-time', '0.5']))
    hook = cfg.default_hooks.visualization
    assert (hook.draw, hook.show, hook.wait_time) == (True, True, 0.5)
    assert 'save_dir' not in cfg.visualizer
    plain = test_tool.build_config(
        test_tool.parse_args([str(DEMO_CONFIG), checkpoint]))
    assert plain.default_hooks.visualization.draw is False
    assert 'output_dir' not in plain.test_evaluator
    assert plain.work_dir.endswith(DEMO_CONFIG.stem)


def test_test_tool_out_reaches_every_evaluator(test_tool, checkpoint,
                                               tmp_path):
    config = tmp_path / 'two_metrics.py'
    config.write_text(f"_base_ = ['{DEMO_CONFIG}']\n"
                      "test_evaluator = [dict(type='IoUMetric'), "
                      "dict(type='IoUMetric', iou_metrics=['mDice'])]\n")
    cfg = test_tool.build_config(
        test_tool.parse_args([str(config), checkpoint, '--out', 'preds']))
    assert [e['output_dir'] for e in cfg.test_evaluator] == ['preds'] * 2


def test_test_tool_tta_wraps_the_model(test_tool, checkpoint):
    cfg = test_tool.build_config(
        test_tool.parse_args([str(FLAGSHIP), checkpoint, '--tta']))
    assert cfg.model.type == 'SegTTAModel'
    assert cfg.model.module.type == 'EncoderDecoder'
    assert cfg.model.module.decode_head.loss_decode.type == 'InfoBatchLoss'
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline
    # The demo config has no test-time augmentation pipeline.
    with pytest.raises(ValueError, match='--tta needs tta_pipeline'):
        test_tool.build_config(
            test_tool.parse_args([str(DEMO_CONFIG), checkpoint, '--tta']))


def test_test_tool_refuses_show_without_visualization_hook(test_tool):
    cfg = test_tool.load_config(str(DEMO_CONFIG), None, None, 'none')
    cfg.default_hooks.pop('visualization')
    args = SimpleNamespace(show=False, show_dir='vis', wait_time=2)
    with pytest.raises(RuntimeError, match='need a visualization hook'):
        test_tool.trigger_visualization_hook(cfg, args)


def test_test_tool_writes_predictions_and_drawings(test_tool, digit_root,
                                                   tmp_path):
    """A real run: --out leaves one label map per test image, --show-dir
    one drawing per image of every drawn batch."""
    cfg = demo_config(tmp_path / 'train', digit_root, passes=1, record=False)
    runner = run_config(cfg)
    checkpoint = tmp_path / 'train' / f'iter_{runner.iter}.pth'
    config_file = tmp_path / 'demo.py'
    # A visualizer of a name already in use would be reused as it is.
    unique_names(cfg).dump(str(config_file))
    out, show = tmp_path / 'preds', tmp_path / 'vis'
    metrics = test_tool.main([
        str(config_file),
        str(checkpoint),
        '--out',
        str(out),
        '--show-dir',
        str(show),
        '--work-dir',
        str(tmp_path / 'test'),
        '--cfg-options',
        # mmseg's hook draws every 50th batch; this test has one batch.
        'default_hooks.visualization.interval=1'
    ])
    assert 0 <= metrics['mIoU'] <= 100
    val_images = sorted(
        p.name for p in (digit_root / 'images' / 'validation').glob('*.png'))
    assert sorted(p.name for p in out.glob('*.png')) == val_images
    assert len(list(show.rglob('*.png'))) == len(val_images)


def test_train_tool_honours_runner_type(train_tool, tmp_path):
    from mmengine.runner import Runner
    from mmseg.registry import RUNNERS

    @RUNNERS.register_module(force=True)
    class RecordingRunner(Runner):
        pass

    cfg = demo_config(tmp_path / 'a', tmp_path, record=False)
    assert type(train_tool.build_runner(cfg)) is Runner
    cfg = demo_config(
        tmp_path / 'b', tmp_path, record=False, runner_type='RecordingRunner')
    assert type(train_tool.build_runner(cfg)) is RecordingRunner


def test_make_tiny_ade_tool(tmp_path, capsys):
    tool = _load_tool('make_tiny_ade', TOOLS / 'dataset_converters')
    tool.main([
        str(tmp_path), '--num-train', '3', '--num-val', '1', '--size', '8',
        '16', '--num-classes', '3'
    ])
    import cv2
    images = sorted((tmp_path / 'images' / 'training').glob('*.jpg'))
    labels = sorted((tmp_path / 'annotations' / 'validation').glob('*.png'))
    assert len(images) == 3 and len(labels) == 1
    assert cv2.imread(str(images[0])).shape == (8, 16, 3)
    assert cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED).max() <= 3
    assert '3 training and 1 validation images' in capsys.readouterr().out
