//! A kubeconfig user whose credential comes from an exec plugin (`aws eks get-token`,
//! `gke-gcloud-auth-plugin`, `kubelogin`): the plugin runs once per client, and again only
//! when the credential it gave is about to expire.
//!
//! kube's own client builder runs the plugin once for its auth layer and twice more to find
//! out whether the plugin gives a client certificate; each real plugin call takes about a
//! second. Here the plugin runs once, and the client gets its token from [`ExecTokenLayer`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Request;
use hyper::header::{AUTHORIZATION, HeaderValue};
use kube::config::{ExecConfig, ExecInteractiveMode};
use serde::Deserialize;

/// A credential is renewed this long before it expires, as client-go and kube do.
const RENEW_BEFORE: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A run of the plugin for a new token, polled by the service that waits for it.
type Renewal = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// What a plugin prints (`client.authentication.k8s.io` ExecCredential); only what we use.
#[derive(Debug, Deserialize)]
struct ExecCredential {
    status: Option<ExecCredentialStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredentialStatus {
    token: Option<String>,
    expiration_timestamp: Option<String>,
}

/// A bearer token and when it stops being valid (`None`: never, as far as we know).
#[derive(Clone)]
struct Token {
    header: HeaderValue,
    expires: Option<jiff::Timestamp>,
}

impl Token {
    fn is_fresh(&self) -> bool {
        self.expires.is_none_or(|expires| {
            jiff::Timestamp::now()
                .checked_add(RENEW_BEFORE)
                .is_ok_and(|soon| soon < expires)
        })
    }
}

/// The plugin of one kubeconfig user and the token it gave last, shared by every clone of
/// the client.
pub struct ExecToken {
    plugin: ExecConfig,
    current: Mutex<Token>,
}

impl std::fmt::Debug for ExecToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecToken")
            .field("command", &self.plugin.command)
            .finish_non_exhaustive()
    }
}

/// Runs the plugin and reads the token it prints. A plugin that gives a client certificate
/// instead is `Ok(None)`: kube's own handling of it is kept.
async fn run_plugin(plugin: &ExecConfig) -> anyhow::Result<Option<Token>> {
    let Some(program) = &plugin.command else {
        anyhow::bail!("the kubeconfig's exec plugin has no `command`");
    };
    let mut command = tokio::process::Command::new(program);
    command.args(plugin.args.iter().flatten());
    for variable in plugin.env.iter().flatten() {
        if let (Some(name), Some(value)) = (variable.get("name"), variable.get("value")) {
            command.env(name, value);
        }
    }
    for name in plugin.drop_env.iter().flatten() {
        command.env_remove(name);
    }
    let interactive = plugin.interactive_mode != Some(ExecInteractiveMode::Never);
    let info = serde_json::json!({
        "apiVersion": plugin.api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": interactive},
    });
    command
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(if interactive {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let output = command
        .output()
        .await
        .map_err(|error| anyhow::anyhow!("cannot run the exec plugin `{program}`: {error}"))?;
    if !output.status.success() {
        anyhow::bail!("the exec plugin `{program}` failed ({})", output.status);
    }
    let credential: ExecCredential = serde_saphyr::from_slice(&output.stdout).map_err(|error| {
        anyhow::anyhow!("the exec plugin `{program}` printed no ExecCredential: {error}")
    })?;
    let Some(status) = credential.status else {
        anyhow::bail!("the exec plugin `{program}` printed an ExecCredential without `status`");
    };
    let Some(token) = status.token else {
        return Ok(None);
    };
    let expires = status
        .expiration_timestamp
        .map(|text| text.parse::<jiff::Timestamp>())
        .transpose()
        .map_err(|error| {
            anyhow::anyhow!("the exec plugin `{program}` gave a bad expirationTimestamp: {error}")
        })?;
    let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        anyhow::anyhow!("the exec plugin `{program}` gave a token that is not a header value")
    })?;
    header.set_sensitive(true);
    Ok(Some(Token { header, expires }))
}

impl ExecToken {
    /// Runs the plugin once now. `None` when it gives a client certificate, not a token.
    pub async fn obtain(plugin: &ExecConfig) -> anyhow::Result<Option<Arc<Self>>> {
        Ok(run_plugin(plugin).await?.map(|token| {
            Arc::new(ExecToken {
                plugin: plugin.clone(),
                current: Mutex::new(token),
            })
        }))
    }

    fn current(&self) -> Option<Token> {
        self.current.lock().ok().map(|token| token.clone())
    }

    /// Runs the plugin again for a new token.
    async fn renew(self: Arc<Self>) -> Result<(), BoxError> {
        let token = run_plugin(&self.plugin)
            .await?
            .ok_or("the exec plugin stopped giving a token")?;
        if let Ok(mut current) = self.current.lock() {
            *current = token;
        }
        Ok(())
    }
}

/// Adds the plugin's token to every request (see [`ExecToken`]).
#[derive(Debug, Clone)]
pub struct ExecTokenLayer(pub Arc<ExecToken>);

impl<S> tower::Layer<S> for ExecTokenLayer {
    type Service = ExecTokenService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ExecTokenService {
            inner,
            token: self.0.clone(),
            renewing: None,
        }
    }
}

/// The service of [`ExecTokenLayer`]: renews an expiring token while it is polled ready
/// (a request waits for it), then sets the `Authorization` header of each request.
pub struct ExecTokenService<S> {
    inner: S,
    token: Arc<ExecToken>,
    renewing: Option<Renewal>,
}

impl<S, B> tower::Service<Request<B>> for ExecTokenService<S>
where
    S: tower::Service<Request<B>, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.renewing.is_none() && self.token.current().is_none_or(|token| !token.is_fresh()) {
            self.renewing = Some(Box::pin(self.token.clone().renew()));
        }
        if let Some(renewing) = &mut self.renewing {
            let renewed = std::task::ready!(renewing.as_mut().poll(cx));
            self.renewing = None;
            renewed?;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(token) = self.token.current() {
            request.headers_mut().insert(AUTHORIZATION, token.header);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_shortly_before_it_expires() {
        let header = HeaderValue::from_static("Bearer t");
        let in_an_hour = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
        let in_a_second = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
        let token = |expires| Token {
            header: header.clone(),
            expires,
        };
        assert!(token(None).is_fresh());
        assert!(token(Some(in_an_hour)).is_fresh());
        assert!(!token(Some(in_a_second)).is_fresh());
    }
}
