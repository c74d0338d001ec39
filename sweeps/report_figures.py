"""Figures of the report (matplotlib, Agg backend): learning curves and rliable plots, each as PNG and PDF."""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


PAPER = ' (paper)'


def _colors(names):
    """One color per method; the paper's entry of a method ('X (paper)') gets the method's color."""
    bases = list(dict.fromkeys(n.removesuffix(PAPER) for n in names))
    cmap = plt.get_cmap('tab20' if len(bases) > 10 else 'tab10')
    base_colors = {name: cmap(i % cmap.N) for i, name in enumerate(bases)}
    return {name: base_colors[name.removesuffix(PAPER)] for name in names}


def save(fig, out_dir, name):
    """Write `name`.png and `name`.pdf; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f'{name}.{ext}') for ext in ('png', 'pdf')]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches='tight')
    plt.close(fig)
    return paths


def learning_curves(panels, methods, out_dir, name='curves', ylabel='success (%)', ylim=(-2, 102)):
    """One panel per domain: the metric (success in %, or `ylabel`) vs total steps per method, shaded 95% interval,
    the end of the offline phase as a dashed line. `ylim=None`: the axis fits the curves (a normalised score).

    panels: [(title, offline_end_step or None, {method: dict(steps, mean, low, high, full)})]; `full` is False at
    steps where fewer runs than the method has contribute (unfinished or diverged runs): drawn dotted."""
    colors = _colors(methods)
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, (title, offline_end, curves) in zip(axes.flat, panels):
        for method in methods:
            curve = curves.get(method)
            if curve is None or not len(curve['steps']):
                continue
            steps, mean = np.asarray(curve['steps']), np.asarray(curve['mean'], float)
            low, high = np.asarray(curve['low'], float), np.asarray(curve['high'], float)
            full = np.asarray(curve['full'], bool)
            color = colors[method]
            ax.plot(steps, mean, ':', color=color, lw=1, marker='.' if len(steps) <= 12 else None, ms=4)
            ax.plot(steps, np.where(full, mean, np.nan), '-', color=color, lw=1.6, label=method)
            ax.fill_between(steps, low, high, color=color, alpha=0.18, lw=0)
            if curve.get('paper') is not None:
                ax.plot(*curve['paper'], '--', color=color, lw=1, alpha=0.8, label='paper (dashed)')
        if offline_end:
            ax.axvline(offline_end, color='0.4', ls='--', lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel('steps (offline, then online)', fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_xlim(left=0)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    handles, labels = [], []
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if 'paper (dashed)' in labels:  # one grey entry for the paper's curves of every method
        handles[labels.index('paper (dashed)')] = plt.Line2D([], [], color='0.4', ls='--', lw=1)
    legend_rows = -(-len(labels) // 6)
    bottom = (0.22 * legend_rows + 0.15) / fig.get_figheight() if labels else 0
    if labels:
        fig.legend(handles, labels, loc='lower center', ncol=min(len(labels), 6), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0))
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return save(fig, out_dir, name)


def interval_estimates(points, intervals, names, metric_names, out_dir, name, title=''):
    """rliable-style interval plot: one subplot per metric, one row per method, point estimate and 95% interval.
    points: {method: [metric values]}, intervals: {method: (2, metrics) array}; values in %."""
    colors = _colors(names)
    fig, axes = plt.subplots(1, len(metric_names), figsize=(3.4 * len(metric_names), 0.4 * len(names) + 1.2),
                             squeeze=False)
    for k, (ax, metric) in enumerate(zip(axes.flat, metric_names)):
        for i, method in enumerate(names):
            low, high = intervals[method][0][k], intervals[method][1][k]
            paper = method.endswith(PAPER)
            ax.barh(i, high - low, left=low, height=0.6, color=colors[method], alpha=0.35 if paper else 0.75,
                    hatch='//' if paper else None, edgecolor=colors[method] if paper else None)
            ax.vlines(points[method][k], i - 0.3, i + 0.3, color='k', lw=1.5)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names if k == 0 else [], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(metric, fontsize=10)
        ax.set_xlim(-1, 101)
        ax.set_xlabel('success (%)', fontsize=8)
        ax.grid(axis='x', alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, name)


def performance_profiles(taus, profiles, intervals, names, out_dir, name, title=''):
    """Fraction of runs with success > tau, with shaded 95% stratified-bootstrap intervals."""
    colors = _colors(names)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method in names:
        style = '--' if method.endswith(PAPER) else '-'
        ax.plot(100 * np.asarray(taus), profiles[method], style, color=colors[method], lw=1.6, label=method)
        ax.fill_between(100 * np.asarray(taus), intervals[method][0], intervals[method][1], color=colors[method],
                        alpha=0.15, lw=0)
    ax.set_xlabel(r'success threshold $\tau$ (%)')
    ax.set_ylabel(r'fraction of runs with success $> \tau$')
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(names) > 8 else 1)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, name)


def improvement(points, intervals, out_dir, name, title=''):
    """Probability of improvement P(X > Y) with 95% intervals: one panel per X, one row per Y, ours (solid) and
    the paper's (hatched) side by side. points/intervals are keyed by (X, Y, 'ours' | 'paper')."""
    focus = list(dict.fromkeys(x for x, _, _ in points))
    baselines = list(dict.fromkeys(y for _, y, _ in points))
    fig, axes = plt.subplots(1, len(focus), figsize=(3.6 * len(focus), 0.32 * len(baselines) + 1.3), squeeze=False)
    for ax, x in zip(axes.flat, focus):
        for i, y in enumerate(baselines):
            for source, offset in (('ours', -0.17), ('paper', 0.17)):
                if (x, y, source) not in points:
                    continue
                low, high = np.ravel(intervals[(x, y, source)])[:2]
                paper = source == 'paper'
                ax.barh(i + offset, high - low, left=low, height=0.32, color='tab:gray' if paper else 'tab:blue',
                        alpha=0.35 if paper else 0.75, hatch='//' if paper else None)
                ax.vlines(points[(x, y, source)], i + offset - 0.16, i + offset + 0.16, color='k', lw=1.2)
        ax.axvline(0.5, color='0.4', ls='--', lw=0.8)
        ax.set_yticks(range(len(baselines)))
        ax.set_yticklabels(baselines if ax is axes.flat[0] else [], fontsize=8)
        ax.set_ylim(len(baselines) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f'P({x} > Y)', fontsize=9)
        ax.grid(axis='x', alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color='tab:blue', alpha=0.75),
               plt.Rectangle((0, 0), 1, 1, color='tab:gray', alpha=0.35, hatch='//')]
    fig.legend(handles, ['ours', 'paper'], loc='upper right', fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, name)
