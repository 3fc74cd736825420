"""A linear probe on the demo's typed tickets: the topic half of the label from the message's vector alone
(bert, multilingual, both), fitted on the train items and scored on the val and test items (whose messages
are the demo's held-out phrasings, TEXT_HELD_OUT), split by the message's script: {script: (items, accuracy)}.
`python -m bench.demo_text_probe [DEMO_FOLDER]` (default work/demo_probe)."""
import time, sys, csv
import numpy as np
sys.path.insert(0, '.')
import stages
from pipeline.demo import generate
from pipeline.config import Config
from pipeline.stage import build_stage
from stages.clean_text import clean, CleanTextConfig
from stages.scripts import script
from sklearn.linear_model import LogisticRegression
t=time.time(); m = generate(__import__('pathlib').Path(sys.argv[1] if len(sys.argv) > 1 else 'work/demo_probe')); print('gen', time.time()-t)
rows=[r for r in csv.DictReader(open(m, encoding='utf-8')) if r['text'] and r['kind']=='typed']
texts=[clean(r['text'], CleanTextConfig()) for r in rows]
y=np.array([r['label'].split('_')[0] for r in rows]); split=np.array([r['split'] for r in rows]); sc=np.array([script(t) for t in texts])
c=Config.load(None); feats={}
for n in ('bert','multilingual'):
    s=build_stage(n,c); s.ensure_ready(); feats[n]=s.embed(texts)
feats['bert+multilingual']=np.hstack([feats['bert'],feats['multilingual']])
tr=split=='train'; te=split!='train'
for n,X in feats.items():
    p=LogisticRegression(max_iter=2000,C=1.0).fit(X[tr],y[tr]).predict(X)
    print(n, {s: (int((te&(sc==s)).sum()), round(float((p[te&(sc==s)]==y[te&(sc==s)]).mean()),3)) for s in ('zh','en')})
