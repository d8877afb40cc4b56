//! A sandbox that runs inside the `runbook run --sandbox` process, beside the playbook.
//!
//! It gets its own thread and tokio runtime, so that nothing the run does (a template lookup
//! that blocks in place, a busy worker) can keep the API server from answering the run and
//! the processes it starts (`kubectl`, the deployer stand-in). Its state is written to a file
//! after every change, so a `kill -9` of the whole process loses nothing a client was told.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::sync::oneshot;

use super::{Sandbox, SandboxOptions};

/// A sandbox served from a thread of this process until [`EmbeddedSandbox::stop`].
#[derive(Debug)]
pub struct EmbeddedSandbox {
    url: String,
    kubeconfig: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl EmbeddedSandbox {
    /// Starts the sandbox and returns once it answers requests.
    pub fn start(options: SandboxOptions) -> anyhow::Result<Self> {
        let (ready_sender, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sandbox".into())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the sandbox's runtime")?;
                runtime.block_on(async move {
                    let sandbox = match Sandbox::start(options).await {
                        Ok(sandbox) => sandbox,
                        Err(error) => {
                            let _ = ready_sender.send(Err(error));
                            return Ok(());
                        }
                    };
                    let address = (
                        sandbox.url().to_string(),
                        sandbox.kubeconfig().to_path_buf(),
                    );
                    let _ = ready_sender.send(Ok(address));
                    // A dropped sender (the run ended without `stop`) stops it too.
                    let _ = stopped.await;
                    sandbox.shutdown().await
                })
            })
            .context("cannot start the sandbox's thread")?;
        match ready.recv() {
            Ok(Ok((url, kubeconfig))) => Ok(EmbeddedSandbox {
                url,
                kubeconfig,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => match thread.join() {
                Ok(Err(error)) => Err(error),
                _ => anyhow::bail!("the sandbox stopped before it was ready"),
            },
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig that reaches it.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Stops serving and saves the state.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the sandbox's thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedSandbox {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = EmbeddedSandbox::start(SandboxOptions {
            dir: dir.path().to_path_buf(),
            ..SandboxOptions::default()
        })
        .unwrap();
        let address = sandbox.url().trim_start_matches("https://").to_string();
        assert!(std::net::TcpStream::connect(&address).is_ok());
        assert!(sandbox.kubeconfig().is_file());
        sandbox.stop().unwrap();
        assert!(std::net::TcpStream::connect(&address).is_err());
    }

    #[test]
    fn one_sandbox_at_a_time_keeps_a_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let options = SandboxOptions {
            dir: dir.path().to_path_buf(),
            state_file: Some(dir.path().join("state.yaml")),
            ..SandboxOptions::default()
        };
        let first = EmbeddedSandbox::start(options.clone()).unwrap();
        let error = EmbeddedSandbox::start(options.clone()).unwrap_err();
        assert!(
            format!("{error:#}").contains("is in use by pid"),
            "{error:#}"
        );
        first.stop().unwrap();
        EmbeddedSandbox::start(options).unwrap().stop().unwrap();
    }
}
