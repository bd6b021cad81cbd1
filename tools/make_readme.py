#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb (what `nbdev-readme` does, without needing quarto).

Markdown cells are copied as they are; code cells become ```python blocks."""
import json
from pathlib import Path

root = Path(__file__).resolve().parents[1]
nb = json.loads((root / 'nbs' / 'index.ipynb').read_text())
parts = []
for c in nb['cells']:
    src = ''.join(c['source']).strip()
    if not src or src.startswith('#|'): continue
    parts.append(src if c['cell_type'] == 'markdown' else f'```python\n{src}\n```')
(root / 'README.md').write_text('<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook -->\n\n'
                                + '\n\n'.join(parts) + '\n')
print('wrote README.md')
