# A team's OpenCompass config, as they run it on their cluster: `opencompass eval_team.py`.
# benchbridge keeps its datasets and puts its own models in place of `models` (configs/byo.yaml).
datasets = [
    dict(abbr='team_capitals', path='{{fileDirname}}/capitals.jsonl', data_type='qa', infer_method='gen'),
]
models = [
    dict(abbr='their-gpu-model', type='opencompass.models.HuggingFacewithChatTemplate',
         path='/models/their-model', max_out_len=16, batch_size=8, run_cfg=dict(num_gpus=1)),
]
