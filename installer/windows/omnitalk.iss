; OmniTalk's Windows installer: per user, no admin rights (Inno Setup 6.6 or newer).
;
; Build it with installer\windows\build_installer.py, which passes the version from
; engine\version.py (/DAppVersion, the one version source) and the private Python (/DPythonDir).
; What it does (installer\README.md says why):
;   1. copies the app folder (main.py, app\, engine\, installer\, assets\, ...) and a private,
;      unregistered python.org Python into %LOCALAPPDATA%\Programs\OmniTalk;
;   2. runs the launcher's install step there (python installer\bootstrap.py install --no-shortcuts)
;      on a progress page: it makes .venv with the PyTorch build this PC's NVIDIA driver runs;
;   3. makes the Start-menu shortcut (and, if ticked, the desktop one) with the OmniTalk icon;
;   4. its uninstaller removes all of that and keeps the downloaded models unless
;      "Also remove the downloaded models (N GB)" is ticked.

#if Ver < EncodeVer(6, 6, 0)
  #error Inno Setup 6.6 or newer is needed (ExecAndLogOutput, CreateCustomForm with its size)
#endif
#ifndef AppVersion
  #error Build with installer\windows\build_installer.py: it passes /DAppVersion from engine\version.py
#endif
#ifndef PythonDir
  #define PythonDir "..\..\build\windows\python"
#endif
#define AppName "OmniTalk"
#define Root "..\.."
#define IconFile "assets\icons\omnitalk.ico"
#define GuiPython "{app}\.venv\Scripts\pythonw.exe"
#define InstallLog "{app}\.venv\omnitalk-install.log"

[Setup]
AppId={{9D03BE49-DAAB-4215-8E01-B9ADF1C7AAA5}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher={#AppName}
VersionInfoVersion={#AppVersion}
; Per user: no UAC prompt; {autopf} is %LOCALAPPDATA%\Programs without admin rights.
PrivilegesRequired=lowest
DefaultDirName={autopf}\{#AppName}
DisableProgramGroupPage=yes
UsePreviousAppDir=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
WizardStyle=modern
SetupIconFile={#Root}\{#IconFile}
UninstallDisplayIcon={app}\{#IconFile}
UninstallDisplayName={#AppName}
OutputDir={#Root}\build\windows
OutputBaseFilename={#AppName}-{#AppVersion}-setup
Compression=lzma2/max
SolidCompression=yes
; The install step downloads about 3 GB (PyTorch with CUDA); the folder itself is small.
ExtraDiskSpaceRequired=6000000000

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#Root}\main.py"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#Root}\pyproject.toml"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#Root}\README.md"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#Root}\omnitalk.cmd"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#Root}\app\*.py"; DestDir: "{app}\app"; Flags: ignoreversion recursesubdirs
Source: "{#Root}\engine\*.py"; DestDir: "{app}\engine"; Flags: ignoreversion recursesubdirs
Source: "{#Root}\installer\*.py"; DestDir: "{app}\installer"; Flags: ignoreversion recursesubdirs
Source: "{#Root}\assets\*"; DestDir: "{app}\assets"; Excludes: "__pycache__"; Flags: ignoreversion recursesubdirs
Source: "{#PythonDir}\*"; DestDir: "{app}\python"; Flags: ignoreversion recursesubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{#GuiPython}"; Parameters: """{app}\main.py"""; WorkingDir: "{app}"; IconFilename: "{app}\{#IconFile}"; Comment: "Push-to-talk voice assistant on your own GPU"
Name: "{autodesktop}\{#AppName}"; Filename: "{#GuiPython}"; Parameters: """{app}\main.py"""; WorkingDir: "{app}"; IconFilename: "{app}\{#IconFile}"; Tasks: desktopicon

[Run]
Filename: "{#GuiPython}"; Parameters: """{app}\main.py"""; WorkingDir: "{app}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent; Check: EnvironmentReady

[UninstallDelete]
; What the install step and the app made inside the app folder.
Type: filesandordirs; Name: "{app}\.venv"
Type: files; Name: "{app}\.omnitalk-install.lock"
Type: filesandordirs; Name: "{app}\build"
Type: filesandordirs; Name: "{app}\omnitalk.egg-info"
Type: filesandordirs; Name: "{app}\app\__pycache__"
Type: filesandordirs; Name: "{app}\engine\__pycache__"
Type: filesandordirs; Name: "{app}\installer\__pycache__"
Type: filesandordirs; Name: "{app}\assets\__pycache__"
Type: dirifempty; Name: "{app}"

[Code]
var
  SetupPage: TOutputProgressWizardPage;
  LastLine: String;
  SetupOk: Boolean;

{ "[2/4] torch 1m05s downloading ..." -> Step 2 of 4; False where the line has no "[k/N]". }
function ParseStep(const S: String; var Step, Total: Integer): Boolean;
var
  Open, Slash, Close: Integer;
  Rest: String;
begin
  Result := False;
  Rest := S;
  Open := Pos('[', Rest);
  while Open > 0 do
  begin
    Rest := Copy(Rest, Open + 1, Length(Rest));
    Slash := Pos('/', Rest);
    Close := Pos(']', Rest);
    if (Slash > 1) and (Close > Slash + 1) then
    begin
      Step := StrToIntDef(Copy(Rest, 1, Slash - 1), -1);
      Total := StrToIntDef(Copy(Rest, Slash + 1, Close - Slash - 1), -1);
      if (Step > 0) and (Total >= Step) then
      begin
        Result := True;
        Exit;
      end;
    end;
    Open := Pos('[', Rest);
  end;
end;

procedure OnSetupLine(const S: String; const Error, FirstLine: Boolean);
var
  Step, Total: Integer;
  Line: String;
begin
  Line := Trim(S);
  if Line = '' then
    Exit;
  LastLine := Line;
  if ParseStep(Line, Step, Total) then
    SetupPage.SetProgress(Step - 1, Total);
  SetupPage.SetText(Line, '');
end;

{ The launcher's install step: .venv with the right PyTorch build, the libraries, a CUDA check. }
procedure RunInstallStep;
var
  ResultCode: Integer;
begin
  SetupPage := CreateOutputProgressPage('Setting up OmniTalk',
    'Downloading PyTorch and the libraries OmniTalk needs (about 3 GB with an NVIDIA GPU). This can take several minutes.');
  SetupPage.SetProgress(0, 1);
  SetupPage.Show;
  try
    SetupOk := ExecAndLogOutput(ExpandConstant('{app}\python\python.exe'),
      ExpandConstant('"{app}\installer\bootstrap.py" install --no-shortcuts'),
      ExpandConstant('{app}'), SW_HIDE, ewWaitUntilTerminated, ResultCode, @OnSetupLine)
      and (ResultCode = 0);
  finally
    SetupPage.Hide;
  end;
  if not SetupOk then
    SuppressibleMsgBox('OmniTalk could not finish setting up:' + #13#10 + LastLine + #13#10#13#10 +
      'The details are in ' + ExpandConstant('{#InstallLog}') + '.' + #13#10 +
      'Check the internet connection and run this installer again (it continues where it stopped).',
      mbError, MB_OK, IDOK);
end;

procedure CurStepChanged(CurStep: TSetupStep);
begin
  if CurStep = ssPostInstall then
    RunInstallStep;
end;

function EnvironmentReady: Boolean;
begin
  Result := SetupOk and FileExists(ExpandConstant('{#GuiPython}'));
end;

{ ---- uninstall: keep the downloaded models unless asked ---- }

{ Where engine\paths.py keeps them: %OMNITALK_HOME%\data\models, else %LOCALAPPDATA%\OmniTalk\models. }
function ModelsDir: String;
begin
  if GetEnv('OMNITALK_HOME') <> '' then
    Result := AddBackslash(GetEnv('OMNITALK_HOME')) + 'data\models'
  else
    Result := ExpandConstant('{localappdata}') + '\OmniTalk\models';
end;

{ ONNX exports made from the models (engine\paths.py cache_dir); they go with the models. }
function CacheDir: String;
begin
  if GetEnv('OMNITALK_HOME') <> '' then
    Result := AddBackslash(GetEnv('OMNITALK_HOME')) + 'cache'
  else
    Result := ExpandConstant('{localappdata}') + '\OmniTalk\Cache';
end;

function FolderBytes(const Dir: String): Int64;
var
  Find: TFindRec;
  Size: Int64;
begin
  Result := 0;
  if FindFirst(AddBackslash(Dir) + '*', Find) then
  try
    repeat
      if (Find.Name <> '.') and (Find.Name <> '..') then
      begin
        if Find.Attributes and FILE_ATTRIBUTE_DIRECTORY <> 0 then
          Result := Result + FolderBytes(AddBackslash(Dir) + Find.Name)
        else
        begin
          Size := Find.SizeHigh;
          Result := Result + Size * 4294967296 + Find.SizeLow;
        end;
      end;
    until not FindNext(Find);
  finally
    FindClose(Find);
  end;
end;

function GigabytesText(const Bytes: Int64): String;
begin
  Result := Format('%.1f GB', [Bytes / 1000000000.0]);
end;

{ A small window with one checkbox, unticked: "Also remove the downloaded models (N GB)". }
function AskRemoveModels(const Bytes: Int64): Boolean;
var
  Form: TSetupForm;
  Info: TNewStaticText;
  Box: TNewCheckBox;
  OkButton: TNewButton;
begin
  Form := CreateCustomForm(420, 150, False, True);  { scaled by Inno Setup itself }
  try
    Form.Caption := 'Uninstall OmniTalk';
    Info := TNewStaticText.Create(Form);
    Info.Parent := Form;
    Info.Left := ScaleX(16);
    Info.Top := ScaleY(16);
    Info.Width := Form.ClientWidth - ScaleX(32);
    Info.WordWrap := True;
    Info.Caption := 'The downloaded models are kept in ' + ModelsDir +
      ', so a new install can use them without downloading them again.';
    Box := TNewCheckBox.Create(Form);
    Box.Parent := Form;
    Box.Left := ScaleX(16);
    Box.Top := ScaleY(70);
    Box.Width := Form.ClientWidth - ScaleX(32);
    Box.Caption := 'Also remove the downloaded models (' + GigabytesText(Bytes) + ')';
    Box.Checked := False;
    OkButton := TNewButton.Create(Form);
    OkButton.Parent := Form;
    OkButton.Caption := 'OK';
    OkButton.ModalResult := mrOk;
    OkButton.Default := True;
    OkButton.Width := ScaleX(90);
    OkButton.Top := Form.ClientHeight - OkButton.Height - ScaleY(12);
    OkButton.Left := Form.ClientWidth - OkButton.Width - ScaleX(16);
    Form.ActiveControl := OkButton;
    Result := (Form.ShowModal = mrOk) and Box.Checked;
  finally
    Form.Free;
  end;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  Bytes: Int64;
begin
  if (CurUninstallStep <> usPostUninstall) or UninstallSilent or not DirExists(ModelsDir) then
    Exit;
  Bytes := FolderBytes(ModelsDir) + FolderBytes(CacheDir);
  if AskRemoveModels(Bytes) then
  begin
    DelTree(ModelsDir, True, True, True);
    DelTree(CacheDir, True, True, True);
  end;
end;
