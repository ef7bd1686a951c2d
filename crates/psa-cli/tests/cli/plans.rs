//! `psa plan`, `psa tenant set-plan` and `extend-trial`, and seats met by `psa user invite`: an
//! operator makes a plan, puts a tenant on it, and an invitation beyond its seats exits 2 with
//! nothing written; a retired plan takes no tenant; a trial is extended.

use crate::workflow::{Setup, code, last_json};

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn an_operator_makes_plans_and_seats_hold_at_the_command_line() {
    let s = Setup::new().await;
    let tenant = psa_models::TenantId::new();
    let mut tx = s.db.pool.begin().await.unwrap();
    psa_models::tenants::create(
        &mut tx,
        tenant,
        psa_models::tenants::NewTenant {
            name: "Seat Co".into(),
            email: "admin@seat.example".into(),
            company_name: None,
            licensed_user_count: None,
            slug: None,
        },
        Default::default(),
    )
    .await
    .unwrap();
    psa_models::seeds::run(&mut tx, tenant).await.unwrap();
    psa_models::users::create_admin(
        &mut tx,
        tenant,
        "Ad",
        "Min",
        "admin@seat.example",
        Default::default(),
    )
    .await
    .unwrap();
    psa_models::plans::start(&mut tx, tenant, "standard", None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let t = tenant.to_string();

    let o = s.run(&[
        "plan",
        "create",
        "duo",
        "--name",
        "Duo",
        "--seat-limit",
        "5",
        "--json",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(last_json(&o)["seat_limit"], 5);
    let o = s.run(&["plan", "create", "Bad Code", "--name", "X"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let o = s.run(&["plan", "create", "duo", "--name", "Again"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let o = s.run(&["plan", "list"]);
    assert!(
        out(&o).contains("duo") && out(&o).contains("standard"),
        "{}",
        out(&o)
    );

    // Two seats: the admin and one more.
    let o = s.run(&[
        "tenant", "set-plan", &t, "--plan", "duo", "--seats", "2", "--json",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(last_json(&o)["seats_allowed"], 2);
    let invite = |email: &str| {
        s.run(&[
            "user",
            "invite",
            "--tenant",
            &t,
            "--email",
            email,
            "--role",
            "Technician",
            "--first-name",
            "Ada",
            "--last-name",
            "Lovelace",
        ])
    };
    let o = invite("one@seat.example");
    assert!(o.status.success(), "{}", out(&o));
    let users = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&s.db.pool)
            .await
            .unwrap()
    };
    let before = users().await;
    let o = invite("two@seat.example");
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(out(&o).contains("2 / 2"), "{}", out(&o));
    assert_eq!(users().await, before, "nothing written");
    let o = s.run(&["tenant", "show", &t]);
    assert!(out(&o).contains("seats       2 / 2 in use"), "{}", out(&o));

    // More seats than the plan has, and a retired plan: refused.
    let o = s.run(&["tenant", "set-plan", &t, "--plan", "duo", "--seats", "6"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let o = s.run(&["plan", "retire", "duo"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = s.run(&["tenant", "set-plan", &t, "--plan", "standard"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = s.run(&["tenant", "set-plan", &t, "--plan", "duo"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(out(&o).contains("retired"), "{}", out(&o));

    // Trials: a subscription that is not trialing has none to extend (exit 2, nothing written);
    // a trialing one is extended from its end; bad days are a usage error.
    let o = s.run(&["tenant", "extend-trial", &t, "--days", "7"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(out(&o).contains("no trial to extend"), "{}", out(&o));
    let o = s.run(&[
        "plan",
        "create",
        "try",
        "--name",
        "Try",
        "--trial-days",
        "14",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let trying = psa_models::TenantId::new();
    let mut tx = s.db.pool.begin().await.unwrap();
    psa_models::tenants::create(
        &mut tx,
        trying,
        psa_models::tenants::NewTenant {
            name: "Try Co".into(),
            email: "admin@try.example".into(),
            company_name: None,
            licensed_user_count: None,
            slug: None,
        },
        Default::default(),
    )
    .await
    .unwrap();
    psa_models::plans::start(&mut tx, trying, "try", None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tr = trying.to_string();
    for bad in ["0", "366", "soon"] {
        let o = s.run(&["tenant", "extend-trial", &tr, "--days", bad]);
        assert_eq!(code(&o), 2, "--days {bad}: {}", out(&o));
    }
    let o = s.run(&["tenant", "extend-trial", &tr, "--days", "10", "--json"]);
    assert!(o.status.success(), "{}", out(&o));
    let x = last_json(&o);
    assert_eq!(x["subscription"]["status"], "trialing");
    assert_eq!(x["reactivated"], false);
    let ends: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(x["subscription"]["trial_ends_at"].clone()).unwrap();
    let expected = chrono::Utc::now() + chrono::Duration::days(24);
    assert!((ends - expected).num_seconds().abs() < 120, "{ends}");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'extend_trial' AND tenant = $1",
    )
    .bind(trying)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // `psa search`: the tenant by part of its name; too short a query is a usage error.
    let o = s.run(&["search", "try c", "--json"]);
    assert!(o.status.success(), "{}", out(&o));
    let found = last_json(&o);
    assert_eq!(found["tenants"][0]["tenant_id"], tr.as_str(), "{found}");
    let o = s.run(&["search", "seat"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("Seat Co"), "{}", out(&o));
    let o = s.run(&["search", "x"]);
    assert_eq!(code(&o), 2, "{}", out(&o));
}
