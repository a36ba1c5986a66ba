@echo off
rem OmniTalk launcher (Windows). Double-click to install everything into .venv and start the app
rem (pip's output is kept in .venv\omnitalk-install.log).
rem   omnitalk.cmd test [pytest args]   runs the test suite instead.
rem   omnitalk.cmd install [--desktop]  installs, then adds a Start-menu (and desktop) shortcut.
rem   omnitalk.cmd uninstall            removes those shortcuts (models and settings stay).
rem   set OMNITALK_TORCH=cpu^|cuda^|cu126^|skip to override the torch build (installer\torch_build.py).
setlocal
set "HERE=%~dp0"
set "PYEXE="
where py >nul 2>nul || goto try_python
py -3 -c "import sys; raise SystemExit(sys.version_info < (3, 10))" >nul 2>nul || goto try_python
set "PYEXE=py -3"
goto run
:try_python
where python >nul 2>nul || goto no_python
python -c "import sys; raise SystemExit(sys.version_info < (3, 10))" >nul 2>nul || goto no_python
set "PYEXE=python"
:run
%PYEXE% "%HERE%installer\bootstrap.py" %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo OmniTalk stopped with an error ^(code %RC%^). See the messages above.
  pause
)
exit /b %RC%
:no_python
echo OmniTalk needs Python 3.10 or newer: install it from https://www.python.org/downloads/ (tick "Add to PATH").
pause
exit /b 1
