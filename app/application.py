"""Builds settings, the engine bridge and the main window; one place for start-up and clean shutdown."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import shiboken6
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from app import settings as settings_store
from app.answer_archive import AnswerArchive
from app.bridge import EngineBridge, EngineFactory
from app.finetune_wizard.launcher import FinetuneLauncher
from app.first_start import start_device_check
from app.icons import app_icon
from app.main_window import MainWindow
from app.settings import AppSettings
from app.settings_dialog import SettingsDialog
from app.setup_wizard import SetupWizard
from app.single_instance import InstanceServer, ask_running_instance, bring_to_front, server_name
from app.tasks import wait_for_background
from app.theme import apply_theme
from app.words import FINETUNE_TAB
from engine.events import AdapterChanged, Failed, Ready
from engine.paths import APP_NAME, config_dir
from engine.version import __version__
from installer.desktop_linux import DESKTOP_ID

logger = logging.getLogger(__name__)

BACKGROUND_DRAIN_MS = 20_000
# Command-line option (argparse dest) -> the AppSettings field it overrides for this run.
COMMAND_LINE_MODEL_FIELDS = {
    "model": "model_dir",
    "speech_encoder": "speech_encoder",
    "vocoder": "vocoder_dir",
    "adapter": "adapter_dir",
}
# Changing one of these loads the model again; a changed adapter alone is switched (SetAdapter).
RELOAD_FIELDS = ("model_dir", "speech_encoder", "vocoder_dir", "quant", "gpu")


def _install_excepthook(window_getter: Callable[[], QWidget | None]) -> None:
    """Unexpected exceptions in Qt slots are logged and shown; the app stays up."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        logger.error("Unhandled exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
        window = window_getter()
        if window is not None and QApplication.instance() is not None:
            QMessageBox.critical(
                window,
                "OmniTalk: unexpected error",
                f"{exc_type.__name__}: {exc}\n\nOmniTalk keeps running. Details are in the log (Help → Show logs).",
            )

    sys.excepthook = hook


def create_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(argv or [sys.argv[0]])
    assert isinstance(app, QApplication), "a QCoreApplication exists: OmniTalk needs a QApplication"
    app.setApplicationName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setOrganizationName(APP_NAME)
    # The window's icon (title bar, task bar, About box); on Wayland the desktop file name is the
    # app id that ties the window to the menu entry `./omnitalk install` writes.
    app.setWindowIcon(app_icon())
    app.setDesktopFileName(DESKTOP_ID)
    return app


class Controller:
    """Owns settings, the bridge and the window; saves settings and starts the model load."""

    def __init__(self, args: argparse.Namespace, engine_factory: EngineFactory | None = None) -> None:
        self.args = args
        loaded = settings_store.load(getattr(args, "settings", None))
        self.settings_path = loaded.path
        self.settings = _with_command_line(loaded.settings, args)
        self.settings_warning = loaded.warning
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, self.settings.theme)
        self.bridge = EngineBridge(engine_factory)
        self.bridge.set_options(self.settings.engine_options())
        self.model_ready = False  # a model is loaded (Ready came after the last LoadModel)
        self.model_on_gpu = False  # ... on a GPU (the fine-tune wizard may need its memory)
        self._settings_dialog: SettingsDialog | None = None  # the last one opened (may be closed)
        # (adapter in use before, adapter asked for) while a SetAdapter is unanswered
        self._adapter_switch: tuple[str | None, Path | None] | None = None
        self.bridge.ready.connect(self._on_ready)
        self.bridge.adapterChanged.connect(self._on_adapter_changed)
        self.bridge.failed.connect(self._on_failed)
        self.window = MainWindow(self.bridge, self.settings)
        self.window.settingsRequested.connect(self.open_settings)
        self.window.setupRequested.connect(self.open_setup)
        self.window.finetuneRequested.connect(lambda: self.open_settings(FINETUNE_TAB))
        self.finetune = FinetuneLauncher(self)
        save_answers = getattr(args, "save_answers", None)
        self.answer_archive = AnswerArchive(self.bridge, Path(save_answers)) if save_answers else None

    def start(self) -> None:
        """Runs once the event loop is up: ask the engine for the sound devices (so a missing sound
        library or device shows at once, before any model loads), tell about bad settings, then load
        the model if we know one or open the setup wizard."""
        self.bridge.list_devices(False)
        if self.settings_warning:
            QMessageBox.warning(self.window, "OmniTalk settings", self.settings_warning)
        if self.settings.model_dir:
            self.load_model()
        else:
            self.open_setup()

    def open_settings(self, tab: str | None = None) -> SettingsDialog:
        dialog = SettingsDialog(self.settings, self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.update_settings(dialog.result_settings()))
        dialog.testMicrophoneRequested.connect(lambda device: self.bridge.test_device("input", device))
        dialog.testSpeakerRequested.connect(lambda device: self.bridge.test_device("output", device))
        dialog.devicesRequested.connect(self.bridge.list_devices)
        dialog.setupRequested.connect(lambda: self.open_setup(dialog))
        self.bridge.deviceTested.connect(dialog.show_audio_test_result_for)
        self.bridge.devicesListed.connect(dialog.show_devices)
        dialog.useAdapterRequested.connect(self.use_adapter)
        dialog.finetuneRequested.connect(lambda: self.finetune.open(dialog))
        self._settings_dialog = dialog
        if tab is not None:
            dialog.show_tab(tab)
        dialog.open()
        return dialog

    def open_setup(self, settings_dialog: SettingsDialog | None = None) -> SetupWizard:
        """The setup wizard (first run, File → Set up model…, or Settings → Model → Download…).

        Opened from the settings dialog, it sits on top of it and the dialog shows the new folders
        when it finishes, so the dialog's OK keeps them."""
        parent = settings_dialog if settings_dialog is not None else self.window
        wizard = SetupWizard(parent)
        wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        wizard.accepted.connect(lambda: self._setup_done(wizard, settings_dialog))
        wizard.open()
        return wizard

    def _setup_done(self, wizard: SetupWizard, settings_dialog: SettingsDialog | None = None) -> None:
        paths = wizard.model_paths()
        self.update_settings(
            self.settings.replace(
                model_dir=str(paths.model_dir),
                speech_encoder=str(paths.speech_encoder) if paths.speech_encoder else None,
                vocoder_dir=str(paths.vocoder_dir),
                licence_accepted=self.settings.licence_accepted or wizard.licence_accepted(),
            )
        )  # the model folder changed, so update_settings starts loading it
        if settings_dialog is not None and settings_dialog.isVisible():
            settings_dialog.use_model(self.settings)

    def load_model(self) -> None:
        command = self.settings.load_command()
        assert command is not None, "only called with a model folder set"
        self.model_ready = False
        self._adapter_switch = None
        self.bridge.send(command)

    def use_adapter(self, adapter: Path | None) -> None:
        """Settings → Fine-tuning's Use / Don't use, and the wizard's "Use it now": the loaded model
        switches without reloading (SetAdapter); with no model loaded, the next load takes it."""
        self.update_settings(self.settings.replace(adapter_dir=str(adapter) if adapter is not None else None))

    def _on_ready(self, ready: Ready) -> None:
        self.model_ready = True
        self.model_on_gpu = ready.info is not None and ready.info.torch_device.startswith("cuda")

    def _on_adapter_changed(self, event: AdapterChanged) -> None:
        if self._adapter_switch is not None and self._adapter_switch[1] == event.adapter:
            self._adapter_switch = None
            self._show_adapter()

    def _on_failed(self, _failed: Failed) -> None:
        """A refused SetAdapter: the model keeps its adapter, so the saved setting goes back to it
        (the window shows the failure in words)."""
        if self._adapter_switch is not None:
            previous, _asked = self._adapter_switch
            self._adapter_switch = None
            self._save(self.settings.replace(adapter_dir=previous))
            self._show_adapter()

    def _show_adapter(self) -> None:
        """An open Settings → Fine-tuning shows the adapter the settings (and the engine) now use."""
        dialog = self._settings_dialog
        if dialog is not None and shiboken6.isValid(dialog) and dialog.isVisible():
            dialog.finetune_tab.adapter_changed(Path(self.settings.adapter_dir) if self.settings.adapter_dir else None)

    def _save(self, new: AppSettings) -> None:
        self.settings = new
        try:
            settings_store.save(new, self.settings_path)
        except OSError as exc:
            QMessageBox.warning(self.window, "OmniTalk settings", f"Settings could not be saved: {exc}")

    def update_settings(self, new: AppSettings) -> None:
        old = self.settings
        self._save(new)
        self.window.apply_settings(new)
        app = QApplication.instance()
        if new.theme != old.theme and isinstance(app, QApplication):
            apply_theme(app, new.theme)
        self.bridge.set_options(new.engine_options())
        if not new.model_dir:
            return
        if any(getattr(old, f) != getattr(new, f) for f in RELOAD_FIELDS):
            self.load_model()
        elif new.adapter_dir != old.adapter_dir:
            if self.model_ready:
                asked = Path(new.adapter_dir) if new.adapter_dir else None
                self._adapter_switch = (old.adapter_dir, asked)
                self.bridge.set_adapter(asked)
            else:
                self.load_model()

    def shutdown(self) -> None:
        self.finetune.shutdown()
        self.bridge.shutdown()


def _with_command_line(settings: AppSettings, args: argparse.Namespace) -> AppSettings:
    """--model / --speech-encoder / --vocoder override the saved model for this run."""
    changes = {
        field: str(Path(value).expanduser().resolve())
        for option, field in COMMAND_LINE_MODEL_FIELDS.items()
        if (value := getattr(args, option, None)) is not None
    }
    return settings.replace(**changes) if changes else settings


def run(args: argparse.Namespace) -> int:
    """Start the GUI and block in the Qt event loop until the window closes; return the exit code."""
    app = create_app()
    # Started again while running (a second click on the menu entry): show that window instead.
    instance = InstanceServer(server_name(config_dir()), app)
    if ask_running_instance(instance.name):
        logger.info("OmniTalk is already running: asked it to show its window")
        return 0
    instance.listen()
    controller = Controller(args)
    instance.showRequested.connect(lambda: bring_to_front(controller.window))
    _install_excepthook(lambda: controller.window)
    controller.window.show()
    # Let the window paint first; anything slow starts after the event loop runs.
    QTimer.singleShot(0, controller.start)
    QTimer.singleShot(0, controller.window.on_started)
    # No NVIDIA driver or a CPU-only torch: say so and offer the CPU (once per situation).
    QTimer.singleShot(0, lambda: start_device_check(controller.window))
    app.aboutToQuit.connect(controller.shutdown)
    code = app.exec()
    # A background task (a first `import torch` for the memory probe can take seconds) must finish
    # before the interpreter shuts down under it.
    if not wait_for_background(BACKGROUND_DRAIN_MS):
        logger.warning("Background tasks still running at exit")
    logger.info("OmniTalk exiting with code %s", code)
    return int(code)
