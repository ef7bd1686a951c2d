//! A credential's use is recorded when its holder makes a request, and only then: a check made
//! by the platform (a live page re-checking its session) leaves the session's idle clock alone.

use psa_models::credentials::{self, Use};
use secrecy::ExposeSecret;

use super::*;

#[tokio::test]
async fn a_check_that_is_not_a_use_does_not_keep_a_session_alive() {
    let db = db().await;
    let t = seeded_tenant(&db, "Idle Co").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let user = psa_models::users::create_admin(
        &mut conn,
        t,
        "Ida",
        "Le",
        "ida@idle.example",
        Default::default(),
    )
    .await
    .unwrap()
    .user
    .user_id;
    let session = credentials::create_session(
        &mut conn,
        t,
        user,
        chrono::Utc::now() + chrono::Duration::hours(1),
        &Default::default(),
    )
    .await
    .unwrap();
    let token = session.token.expose_secret();
    // Last seen 90 s ago; sessions idle for two minutes end (a use is recorded at most once a
    // minute).
    sqlx::query(
        "UPDATE sessions SET last_seen_at = now() - interval '90 seconds' WHERE tenant = $1",
    )
    .bind(t)
    .execute(&mut *conn)
    .await
    .unwrap();
    let idle = std::time::Duration::from_secs(120);
    // The stream's check: still valid, and the clock is not reset.
    assert!(
        credentials::authenticate_as(&mut conn, token, idle, Use::NotRecorded)
            .await
            .unwrap()
            .is_some()
    );
    assert!(seen(&mut conn, t).await >= 89.0);
    // Once idle past the limit, the same check says it has ended.
    sqlx::query(
        "UPDATE sessions SET last_seen_at = now() - interval '121 seconds' WHERE tenant = $1",
    )
    .bind(t)
    .execute(&mut *conn)
    .await
    .unwrap();
    assert!(
        credentials::authenticate_as(&mut conn, token, idle, Use::NotRecorded)
            .await
            .unwrap()
            .is_none()
    );
    // A request by its holder (before the limit) does reset it.
    sqlx::query(
        "UPDATE sessions SET last_seen_at = now() - interval '90 seconds' WHERE tenant = $1",
    )
    .bind(t)
    .execute(&mut *conn)
    .await
    .unwrap();
    assert!(
        credentials::authenticate(&mut conn, token, idle)
            .await
            .unwrap()
            .is_some()
    );
    assert!(seen(&mut conn, t).await < 5.0);
}

/// Seconds since the session of `t` was last seen.
async fn seen(conn: &mut sqlx::PgConnection, t: TenantId) -> f64 {
    sqlx::query_scalar::<_, f64>(
        "SELECT extract(epoch FROM now() - last_seen_at)::float8 FROM sessions WHERE tenant = $1",
    )
    .bind(t)
    .fetch_one(conn)
    .await
    .unwrap()
}
