//! Windows service entry point: when the SCM starts `g2c-agent ... run --windows-service`, hand
//! control to the service dispatcher, report Running, and turn the SCM's Stop into the same
//! shutdown token SIGTERM cancels elsewhere (drain, then exit).
//!
//! Compiled only for Windows, which this project's build machine does not have: it is kept
//! small and follows the `windows-service` crate's documented pattern; see
//! `deploy/windows/README.md` for what is and is not tested.

use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

use crate::service::LABEL;

type Body = Box<dyn FnOnce(CancellationToken) -> Result<(), String> + Send>;

static BODY: Mutex<Option<Body>> = Mutex::new(None);

define_windows_service!(ffi_service_main, service_main);

/// Run `body` as the Windows service; returns when the SCM stopped it.
pub fn run_as_service(body: Body) -> Result<(), windows_service::Error> {
    *BODY.lock().expect("service body lock") = Some(body);
    service_dispatcher::start(LABEL, ffi_service_main)
}

fn status(state: ServiceState, exit: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: ServiceExitCode::Win32(exit),
        checkpoint: 0,
        wait_hint: Duration::from_secs(30),
        process_id: None,
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let Some(body) = BODY.lock().expect("service body lock").take() else {
        return;
    };
    let token = CancellationToken::new();
    let stop = token.clone();
    let handler = move |event| match event {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            stop.cancel();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(handle) = service_control_handler::register(LABEL, handler) else {
        return;
    };
    let _ = handle.set_service_status(status(ServiceState::Running, 0));
    // A non-zero exit makes the SCM apply the recovery actions (restart).
    let exit = match body(token) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    let _ = handle.set_service_status(status(ServiceState::Stopped, exit));
}
