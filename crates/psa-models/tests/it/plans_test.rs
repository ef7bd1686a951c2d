//! The seats' lock: a second change to a tenant's users waits for the first, but not for ever.

use super::*;

#[tokio::test]
async fn a_change_to_users_waits_for_the_seats_then_says_so() {
    let db = db().await;
    let tenant = seeded_tenant(&db, "Locked").await;
    let mut tx = db.pool.begin().await.unwrap();
    psa_models::plans::start(&mut tx, tenant, "standard", Some(3))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut first = db.pool.begin().await.unwrap();
    assert!(
        psa_models::plans::lock_seats(&mut first, tenant)
            .await
            .unwrap()
    );
    let mut second = db.pool.begin().await.unwrap();
    let started = std::time::Instant::now();
    let e = psa_models::plans::ensure_room(&mut second, tenant)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "unavailable", "{e}");
    assert!(started.elapsed() >= psa_models::plans::SEAT_LOCK_WAIT);
    drop(second);
    // Once the first is done, the next one goes through, and the wait it set is undone.
    first.commit().await.unwrap();
    let mut third = db.pool.begin().await.unwrap();
    psa_models::plans::ensure_room(&mut third, tenant)
        .await
        .unwrap();
    let timeout: String = sqlx::query_scalar("SELECT current_setting('lock_timeout')")
        .fetch_one(&mut *third)
        .await
        .unwrap();
    assert_eq!(timeout, "0");
}
