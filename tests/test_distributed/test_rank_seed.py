"""Two real processes (gloo): one sampler seed for all ranks, whatever the
runner's randomness settings.

mmengine gives the sampler no seed when ``randomness.seed`` is unset, and
none at all with ``diff_rank_seed=True`` (each rank's global generators are
then seeded differently on purpose). InfoBatch's passes are decided on
every rank from the sampler's seed, so that seed must come from rank 0
(``sync_random_seed``), never from a rank's own generator. The probe
builds the train dataloader exactly as mmengine's runner does
(``set_random_seed``, then ``Runner.build_dataloader``) on two processes.
"""
import json
import os
import subprocess
import sys

from helpers import free_port

PROBE = r'''
import json
import sys

import numpy as np
import torch.distributed as dist
from mmengine.dist import all_gather_object
from mmengine.runner import Runner
from mmengine.runner.utils import set_random_seed

from mmseg_infobatch import InfoBatchSampler

dist.init_process_group('gloo')
results = []
for randomness in json.loads(sys.argv[1]):
    diff_rank_seed = randomness.get('diff_rank_seed', False)
    # Runner.__init__ with cfg.randomness, then its train dataloader.
    seed = set_random_seed(randomness.get('seed'),
                           diff_rank_seed=diff_rank_seed)
    loader = Runner.build_dataloader(
        dict(batch_size=2, num_workers=0, dataset=list(range(20)),
             sampler=dict(type=InfoBatchSampler)),
        seed=seed, diff_rank_seed=diff_rank_seed)
    sampler = loader.sampler
    sampler.configure(2)
    share = list(iter(sampler))
    results.append(dict(seed=sampler.seed,
                        padded_order=sampler.padded_order.tolist(),
                        share=share,
                        own_draw=int(np.random.randint(2**31))))
gathered = all_gather_object(results)
if dist.get_rank() == 0:
    with open(sys.argv[2], 'w') as f:
        json.dump(gathered, f)
dist.destroy_process_group()
'''

SETTINGS = [
    dict(),
    dict(diff_rank_seed=True),
    dict(seed=7, diff_rank_seed=True),
    dict(seed=7),
]


def test_every_rank_decides_from_one_seed(tmp_path):
    script, out = tmp_path / 'probe.py', tmp_path / 'out.json'
    script.write_text(PROBE)
    # PYTHONPATH is passed on as it is: the mutation check puts its copy
    # of the package there.
    env = dict(
        os.environ,
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(free_port()),
        WORLD_SIZE='2',
        OMP_NUM_THREADS='1')
    procs = [
        subprocess.Popen(
            [sys.executable,
             str(script),
             json.dumps(SETTINGS),
             str(out)],
            env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True) for rank in (0, 1)
    ]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], '\n'.join(logs)[-4000:]
    ranks = json.loads(out.read_text())
    for setting, rank0, rank1 in zip(SETTINGS, *ranks):
        if setting.get('diff_rank_seed'):
            # The setting took effect: the ranks' own generators differ.
            assert rank0['own_draw'] != rank1['own_draw'], setting
        assert rank0['seed'] == rank1['seed'], setting
        assert rank0['padded_order'] == rank1['padded_order'], setting
        # Interleaved shares of one pass: disjoint, covering all 20.
        assert sorted(rank0['share'] + rank1['share']) == list(range(20))
    # No fixed seed: a drawn one, shared; a fixed one is used as given.
    assert ranks[0][3]['seed'] == 7
