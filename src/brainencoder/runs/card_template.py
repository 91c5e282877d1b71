"""The model card's body: a jinja2 template of Markdown (see :mod:`.card`).

Its values: ``title``, ``members`` (each with ``name``, ``trunk``, ``layers``,
``readout``, ``image_size``, ``training`` rows and ``scores`` tables),
``subjects`` (``name``, ``lh``, ``rh``, ``groups``, ``trained_on``),
``n_vertices``, ``n_lh``, ``n_rh``, ``scored``, ``repo_id``, ``load_name``,
``example_roi``, ``files`` and ``version``; the ``cell`` filter escapes a table
cell. Rendered with ``trim_blocks`` and ``lstrip_blocks``: a line holding only a
block tag leaves nothing.
"""

from __future__ import annotations

__all__ = ["TEMPLATE"]

#: the card's body (jinja2; ``cell`` escapes a Markdown table cell)
TEMPLATE = """# {{ title }}

A multi-subject fMRI encoding model made with brainencoder: from a natural image it
predicts the cortical response of each of its {{ subjects|length }} subjects at every
vertex they have on the fsaverage surface, as the Algonauts 2023 challenge scores it.
{% if members|length > 1 %}
It is an ensemble of {{ members|length }} models: its prediction is their mean.
{% endif %}

## Model

| member | trunk | layers | readout | image size |
|---|---|---|---|---|
{% for m in members %}
| {{ m.name|cell }} | {{ m.trunk|cell }} | {{ m.layers|cell }} | {{ m.readout|cell }} \
| {{ m.image_size|cell }} |
{% endfor %}

One readout serves every subject on the group space: the {{ n_vertices }} fsaverage
vertices ({{ n_lh }} left, {{ n_rh }} right) that at least one subject has.

## Subjects and vertices

| subject | lh vertices | rh vertices | ROI groups | trained on |
|---|---:|---:|---|---|
{% for s in subjects %}
| {{ s.name|cell }} | {{ s.lh }} | {{ s.rh }} | {{ s.groups|cell }} | {{ s.trained_on|cell }} |
{% endfor %}

Each subject's vertex masks and ROI labels (with their names) are in `rois/`, so
`pred.roi("NAME")` works without the challenge's files.

## Training

{% for m in members %}
**{{ m.name }}**{% if not m.training %}: not recorded (a bare model file).{% endif %}


{% if m.training %}
| setting | value |
|---|---|
{% for key, value in m.training %}
| {{ key|cell }} | {{ value|cell }} |
{% endfor %}
{% endif %}

{% endfor %}
## Scores

{% for m in members %}
{% for s in m.scores %}
**{{ m.name }}**, {{ s.split }} split ({{ s.source }}):

| {{ s.columns|join(" | ") }} |
|{% for c in s.columns %}---|{% endfor %}

{% for row in s.rows %}
| {{ row|map("cell")|join(" | ") }} |
{% endfor %}

{% endfor %}
{% endfor %}
{% if not scored %}
No scores were recorded with the runs (`brainencoder evaluate RUN` writes them).
{% endif %}
Scores of a split the model trained on are never reported: `evaluate` refuses them.

## How to use

```bash
pip install brainencoder huggingface_hub
{% if repo_id %}
hf download {{ repo_id }}
{% endif %}
brainencoder predict {{ load_name }} IMAGES --subject {{ subjects[0].name }} --out pred.npz
```

```python
import brainencoder as be

model = be.load("{{ load_name }}")
pred = model.predict(images, subject="{{ subjects[0].name }}")  # .lh, .rh
maps = pred.to_fsaverage()  # full fsaverage arrays, NaN off the subject's vertices
{% if example_roi %}
values = pred.roi("{{ example_roi }}")  # the predictions at that ROI's vertices
{% endif %}
```

## Files

| file | what it holds |
|---|---|
{% for name, what in files %}
| `{{ name }}` | {{ what|cell }} |
{% endfor %}

## Citation

The model follows the GroupLin entry of CMI-DAIR to the Algonauts 2023 challenge
(code: https://github.com/childmindresearch/algonauts23):

```bibtex
@article{lane2023parameter,
  title   = {A Parameter-efficient Multi-subject Model for Predicting fMRI Activity},
  author  = {Lane, Connor and Kiar, Gregory},
  journal = {arXiv preprint arXiv:2308.02351},
  year    = {2023}
}
```

Exported by brainencoder {{ version }}.
"""
