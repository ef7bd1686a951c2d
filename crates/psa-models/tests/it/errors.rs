//! Error classification against real server errors: each SQLSTATE the workflow's retry rule
//! decides on, raised by PostgreSQL itself, is classified transient (retry for minutes) or
//! permanent (roll back now).

use psa_models::Error;

async fn raised(db: &psa_testing::TestDb, code: &str) -> Error {
    let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$");
    let e = sqlx::query(&sql).execute(&db.pool).await.unwrap_err();
    assert_eq!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some(code),
        "the server raised {code}"
    );
    Error::from(e)
}

#[tokio::test]
async fn transient_sqlstates_are_retried_and_the_rest_are_not() {
    let db = super::db().await;
    let transient = [
        "08000", "08003", "08006", // connection exceptions (class 08)
        "40001", // serialization failure
        "40P01", // deadlock
        "57P01", "57P02", "57P03", // shutdown, crash, cannot connect now
        "25006", // read-only transaction: a failover in progress
        "53300", // too many connections
        "55P03", // lock not available
    ];
    for code in transient {
        let e = raised(&db, code).await;
        assert!(e.is_transient(), "{code} must be retried: {e:?}");
        assert_eq!(e.code(), "internal", "{code}");
    }
    let permanent = [
        ("23505", "conflict"),          // unique violation: a real conflict
        ("23503", "foreign_key_error"), // a reference to nothing
        ("23514", "validation_error"),  // a check constraint
        ("22P02", "validation_error"),  // invalid text representation
        ("42501", "internal"),          // insufficient privilege (row-level security)
        ("42P01", "internal"),          // undefined table: a bug, not a blip
        ("53100", "internal"),          // disk full: retrying for minutes will not help
        ("P0001", "internal"),          // raise_exception
    ];
    for (code, api_code) in permanent {
        let e = raised(&db, code).await;
        assert!(!e.is_transient(), "{code} must not be retried: {e:?}");
        assert_eq!(e.code(), api_code, "{code}");
    }
    // A reply cut off or garbled on the wire (the server killed mid-message) too.
    assert!(
        psa_models::Error::from(sqlx::Error::Protocol("unexpected end of message".into()))
            .is_transient()
    );
    // Losing the connection itself (not an error response) is transient too.
    let mut conn = db.pool.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&db.pool)
        .await
        .unwrap();
    let e = Error::from(
        sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .unwrap_err(),
    );
    assert!(
        e.is_transient(),
        "a terminated connection must be retried: {e:?}"
    );
}
