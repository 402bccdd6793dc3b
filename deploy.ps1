<#
.SYNOPSIS
  Windows entry point: creates or reuses .venv, installs the project, then runs `inv deploy`
  (or `inv verify`) and returns inv's exit code.

.DESCRIPTION
  Secrets are never passed on the command line: they are read from the env file
  (default .env beside this script) by the task library itself.

.EXAMPLE
  .\deploy.ps1                      # full deploy
  .\deploy.ps1 -UpdateOnly          # roll forward in place, data kept
  .\deploy.ps1 -Plan                # what a deploy would do; changes nothing
  .\deploy.ps1 -VerifyOnly          # checks and artifact collection only
  .\deploy.ps1 -EnvFile lab.env -SkipAllowlist -NoTimestamp
#>
[CmdletBinding()]
param(
    [switch]$UpdateOnly,
    [switch]$VerifyOnly,
    [switch]$Plan,
    [switch]$SkipAllowlist,
    [switch]$NoTimestamp,
    [string]$EnvFile = "",
    [string]$Python = ""
)

$ErrorActionPreference = "Stop"
Set-Location -Path $PSScriptRoot

if ($UpdateOnly -and $VerifyOnly) {
    Write-Error "-UpdateOnly and -VerifyOnly cannot be combined: pick one."
    exit 2
}

if ($Plan -and $VerifyOnly) {
    Write-Error "-Plan and -VerifyOnly cannot be combined: -Plan shows what a deploy would do."
    exit 2
}

$onWindows = ($env:OS -eq "Windows_NT")
$venv = Join-Path $PSScriptRoot ".venv"
$venvPython = if ($onWindows) { Join-Path $venv "Scripts\python.exe" } else { Join-Path $venv "bin/python" }

function Find-BasePython {
    if ($Python) { return @($Python) }
    foreach ($candidate in @(@("py", "-3"), @("python3"), @("python"))) {
        if (Get-Command $candidate[0] -ErrorAction SilentlyContinue) { return $candidate }
    }
    Write-Error "Python 3.10+ was not found. Install it from python.org (tick 'Add to PATH') or pass -Python C:\path\to\python.exe."
    exit 2
}

if (-not (Test-Path $venvPython)) {
    $base = Find-BasePython
    $exe = $base[0]
    $rest = @($base | Select-Object -Skip 1)
    Write-Host "Creating virtual environment in $venv"
    & $exe @rest -m venv $venv
    if ($LASTEXITCODE -ne 0) { Write-Error "could not create $venv"; exit $LASTEXITCODE }
}

# Reinstall only when pyproject.toml changed since the last install.
$stamp = Join-Path $venv ".installed-pyproject"
$current = (Get-FileHash (Join-Path $PSScriptRoot "pyproject.toml") -Algorithm SHA256).Hash
$previous = if (Test-Path $stamp) { Get-Content $stamp -Raw } else { "" }
if ($previous.Trim() -ne $current) {
    Write-Host "Installing the project into $venv"
    & $venvPython -m pip install --quiet --upgrade pip
    & $venvPython -m pip install --quiet -e $PSScriptRoot
    if ($LASTEXITCODE -ne 0) { Write-Error "pip install failed (see above)"; exit $LASTEXITCODE }
    Set-Content -Path $stamp -Value $current
}

$task = if ($VerifyOnly) { "verify" } else { "deploy" }
$invokeArgs = @($task)
if ($UpdateOnly) { $invokeArgs += "--update-only" }
if ($Plan) { $invokeArgs += "--plan" }
if ($SkipAllowlist -and -not $VerifyOnly) { $invokeArgs += "--skip-allowlist" }
if ($NoTimestamp) { $invokeArgs += "--no-timestamp" }
if ($EnvFile) { $invokeArgs += @("--env-file", $EnvFile) }

& $venvPython -m invoke @invokeArgs
exit $LASTEXITCODE
