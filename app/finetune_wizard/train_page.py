"""Page 4: the training run (``python -m engine finetune run``) with a progress bar, the time left,
pairs per second and the live loss curve.

When the training will run on the GPU that holds OmniTalk's conversation model and the check's plan
says it does not fit beside it, ``unloadRequested`` asks the controller to unload that model first
and ``reloadRequested`` to load it again when the run ends (the page says so). On the CPU nothing
is unloaded and nothing is said.

"Stop training" asks the subprocess to save a checkpoint and stop (then kills it if it does not);
after a stop, a crash or a reboot, "Resume" continues from the last checkpoint and "Start again"
starts over. Failures show here in words (app/finetune_wizard/texts.py), never a traceback; the
log has the subprocess's own lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QVBoxLayout, QWizardPage

from app.finetune_wizard.check_page import STAGE_WORDS
from app.finetune_wizard.loss_curve import LossCurve
from app.finetune_wizard.process import FinetuneProcess
from app.finetune_wizard.state import WizardState
from app.finetune_wizard.texts import (
    CANCEL_TRAINING_BUTTON,
    RESUME_BUTTON,
    START_AGAIN_BUTTON,
    TRAIN_PAGE,
    error_words,
)
from app.widgets import ERROR_COLOUR, OK_COLOUR, button_row, coloured
from engine.finetune.library import TRAINING_DIR_SUFFIX

EXIT_CANCELLED = 4  # engine/finetune/cli.py


def duration_text(seconds: float) -> str:
    if seconds >= 90 * 60:
        return f"about {seconds / 3600:.1f} hours"
    if seconds >= 90:
        return f"about {seconds / 60:.0f} minutes"
    return f"about {max(1, round(seconds))} seconds"


def needs_room(plan: dict[str, Any] | None) -> bool:
    """The check's plan trains on a GPU and needs more than is free there now."""
    if not plan or not str(plan.get("device", "")).startswith("cuda"):
        return False
    needed, free = plan.get("memory_needed_bytes"), plan.get("memory_free_bytes")
    return isinstance(needed, int | float) and isinstance(free, int | float) and needed > free


class TrainPage(QWizardPage):
    trainingFinished = Signal(bool)  # True: the adapter is written
    unloadRequested = Signal()  # make room on the GPU: unload the conversation model
    reloadRequested = Signal()  # the run ended: load the conversation model again

    def __init__(self, state: WizardState, python: str | None = None, *, model_on_gpu: bool = False) -> None:
        super().__init__()
        self.state = state
        self.model_on_gpu = model_on_gpu  # the app's conversation model sits on a GPU
        self.unloaded = False  # this page unloaded it for the current run
        self.setTitle(TRAIN_PAGE)
        self.setSubTitle("OmniTalk is learning your answers. You can keep using it meanwhile.")
        self.process = FinetuneProcess(self, python=python)
        self.process.received.connect(self._on_event)
        self.process.finished.connect(self._on_finished)
        self.stage_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.time_label = QLabel()
        self.speed_label = QLabel()
        self.curve = LossCurve()
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.stop_button = QPushButton(CANCEL_TRAINING_BUTTON)
        self.resume_button = QPushButton(RESUME_BUTTON)
        self.again_button = QPushButton(START_AGAIN_BUTTON)
        layout = QVBoxLayout(self)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.progress)
        layout.addWidget(button_row(self.time_label, self.speed_label))
        layout.addWidget(self.curve, 1)
        layout.addWidget(self.message_label)
        layout.addWidget(button_row(self.stop_button, self.resume_button, self.again_button))
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.again_button.clicked.connect(lambda: self.start(resume=False))
        self._done = False
        self._stage_offsets: dict[int, int] = {}
        self._total_steps = 0
        self.steps_seen = 0

    # ---------------------------------------------------------------------- running

    def initializePage(self) -> None:
        if not self._done and not self.process.running:
            self.start(resume=self.state.resume)

    def start(self, *, resume: bool) -> None:
        state = self.state
        if state.out is None:
            state.out = state.new_out()  # "Start again" reuses it: the run replaces its checkpoint
        state.resume = resume
        state.adapter = None
        state.eval_before = state.eval_after = None
        state.save_run()
        self._done = False
        self._stage_offsets.clear()
        self._total_steps = 0
        self.curve.clear()
        self.progress.setRange(0, 0)
        self.stage_label.setText("Preparing: loading the model and your data…")
        self.time_label.clear()
        self.speed_label.clear()
        self.message_label.clear()
        self._buttons(running=True)
        if self.model_on_gpu and not self.unloaded and needs_room(state.plan):
            self.unloaded = True
            self.unloadRequested.emit()
            self.message_label.setText(
                "To make room on the graphics card, OmniTalk's conversation model is unloaded while "
                "it trains and loaded again afterwards."
            )
        self.process.start(state.run_args())
        self.completeChanged.emit()

    def stop(self) -> None:
        self.stop_button.setEnabled(False)
        self.stage_label.setText("Stopping after saving the progress…")
        self.process.stop()

    def _buttons(self, *, running: bool) -> None:
        out = self.state.out
        resumable = out is not None and out.with_name(out.name + TRAINING_DIR_SUFFIX).is_dir()
        self.stop_button.setVisible(running)
        self.stop_button.setEnabled(running)
        self.resume_button.setVisible(not running and not self._done and resumable)
        self.again_button.setVisible(not running and not self._done)

    # ---------------------------------------------------------------------- events

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "plan":
            offset = 0
            for stage in event.get("stages", []):
                self._stage_offsets[stage["stage"]] = offset
                offset += stage["total_steps"]
            self._total_steps = offset
            self.curve.total_steps = offset
            self.progress.setRange(0, max(1, offset))
        elif kind == "stage":
            words = STAGE_WORDS.get(event["stage"], f"stage {event['stage']}")
            self.stage_label.setText(f"Training {words}: {event['examples']} pairs, {event['total_steps']} steps.")
        elif kind == "step":
            self._on_step(event)
        elif kind == "eval":
            if event.get("when") == "before":
                self.state.eval_before = event
                self.stage_label.setText("Training…")
            else:
                self.state.eval_after = event
        elif kind == "checkpoint":
            self.message_label.setText(f"Progress saved (step {event['step']}).")
            coloured(self.message_label, None)
        elif kind == "done":
            self.state.adapter = self.state.out = Path(event["adapter"])

    def _on_step(self, event: dict[str, Any]) -> None:
        done = self._stage_offsets.get(event["stage"], 0) + int(event["step"])
        self.steps_seen += 1
        self.curve.add(done, float(event["loss"]))
        if self._total_steps:
            self.progress.setValue(done)
            later = sum(1 for s, o in self._stage_offsets.items() if s > event["stage"])
            more = " in this part" if later else ""
            self.time_label.setText(f"{duration_text(float(event['eta_s']))} left{more}")
        else:
            self.time_label.setText(f"step {event['step']} of {event['total_steps']}")
        self.speed_label.setText(f"· {event['samples_per_s']:.2f} pairs per second · loss {event['loss']:.3f}")

    def _on_finished(self, code: int, error: dict[str, Any] | None) -> None:
        if self.unloaded:
            self.unloaded = False
            self.reloadRequested.emit()
        self._done = code == 0 and self.state.adapter is not None
        if self._done:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.stage_label.setText("Done. Press Next to compare the answers.")
            self.time_label.setText(f"{len(self.curve.points)} steps")
            self.message_label.setText("Your adapter is ready.")
            coloured(self.message_label, OK_COLOUR)
            self.state.forget_run()
        else:
            if code == EXIT_CANCELLED and error is None:
                error = {"kind": "cancelled", "message": "Cancelled."}
            words = error_words(error)
            self.stage_label.setText(words.title)
            self.time_label.clear()
            self.message_label.setText(words.plain())
            coloured(self.message_label, None if error and error.get("kind") == "cancelled" else ERROR_COLOUR)
        self._buttons(running=False)
        self.completeChanged.emit()
        self.trainingFinished.emit(self._done)

    def isComplete(self) -> bool:
        return self._done

    @property
    def running(self) -> bool:
        return self.process.running
