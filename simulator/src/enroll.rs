//! Enrolls the gateways the simulator starts, as a technician would: a
//! one-time code from the running backend's service API, exchanged at its
//! enrollment endpoint (HTTPS) for the gateway's certificate, with the
//! gateway's key made on the gateway's side. Nothing bypasses mutual TLS.

use anyhow::Context;

/// Points `gw` at `backend`'s enrollment endpoint and, unless it has an
/// identity already (a gateway data dir kept from an earlier run), enrolls
/// it.
pub async fn enroll_gateway(
    backend: &trygg_bridge::Ready,
    gw: &mut trygg_gateway::Config,
    site: &str,
    by: &str,
) -> anyhow::Result<()> {
    gw.enrollment.url = backend.enroll_url();
    let identity = trygg_uplink::enroll::IdentityFiles::in_data_dir(&gw.data_dir);
    if identity.exists() {
        return Ok(());
    }
    let made =
        trygg_uplink::enroll::create_code_via_api(backend.api, &gw.gateway_id, site, 600, by)
            .await
            .context("the backend made no enrollment code")?;
    let code = made["code"].as_str().unwrap_or_default();
    let info = trygg_uplink::enroll::enroll(
        &gw.enrollment.url,
        &gw.uplink.ca_file,
        &gw.gateway_id,
        code,
        &identity,
    )
    .await
    .with_context(|| format!("gateway {} could not enroll", gw.gateway_id))?;
    tracing::info!(gateway = %info.gateway, fingerprint = %info.fingerprint, not_after = %info.not_after, "gateway enrolled with a one-time code");
    Ok(())
}
