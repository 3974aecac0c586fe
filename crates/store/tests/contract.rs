//! The store contract: every repository operation, run identically against SQLite and
//! PostgreSQL. Each test gets a fresh database (a temp file, or a new PostgreSQL schema).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

#[macro_use]
mod backends;

use std::collections::BTreeMap;
use std::sync::Arc;

use aether_domain::entities::*;
use aether_domain::pricing::{CostBreakdown, PriceTier, TieredPricing, TokenUsage};
use aether_domain::*;
use aether_store::*;
use serde_json::json;

contract!(
    migrations_are_idempotent,
    users_round_trip_filter_and_conflict,
    user_spend_counters_are_atomic,
    api_keys_and_hash_lookup,
    balance_ledger_is_exact_under_concurrency,
    providers_endpoints_keys_cascade,
    models_and_pricing_round_trip,
    settings_audit_announcements_ip_rules,
    sessions_rotate_with_compare_and_swap,
    usage_lifecycle_bodies_and_traces,
    config_changes_are_all_or_nothing,
    billing_applies_exactly_once,
    quota_periods_reset_in_the_database,
    health_timeline_counts_attempts_per_bucket,
    usage_filters_narrow_listings,
    usage_counts_stop_past_the_page,
    usage_summary_totals_in_the_database,
    usage_breakdown_groups_and_orders,
    usage_heatmap_counts_weekday_and_hour,
    stale_in_flight_usage_is_failed,
);

fn now() -> Timestamp {
    Timestamp::now()
}

fn user(email: &str) -> User {
    User {
        id: UserId::new(),
        email: email.to_string(),
        username: email.split('@').next().unwrap().to_string(),
        password_hash: "$argon2id$fake".into(),
        role: Role::User,
        is_active: true,
        quota_usd: Some(Usd::dollars(10)),
        used_usd: Usd::ZERO,
        total_usd: Usd::ZERO,
        quota_period: QuotaPeriod::Monthly,
        period_started_at: Some(now()),
        allowed_providers: None,
        allowed_api_formats: Some(vec![ApiFormat::Claude, ApiFormat::OpenaiCli]),
        allowed_models: Some(vec!["claude-*".into()]),
        model_capability_settings: BTreeMap::from([(
            "claude-opus-*".to_string(),
            vec!["cache_1h".to_string()],
        )]),
        last_login_at: None,
        created_at: now(),
        updated_at: now(),
    }
}

fn api_key(user: Option<UserId>, hash: &str) -> ApiKey {
    ApiKey {
        id: ApiKeyId::new(),
        user_id: user,
        key_hash: hash.into(),
        key_display: "sk-abc…wxyz".into(),
        name: format!("key {hash}"),
        is_active: true,
        is_standalone: user.is_none(),
        balance_usd: Usd::ZERO,
        expires_at: None,
        auto_delete_on_expiry: false,
        allowed_providers: None,
        allowed_api_formats: None,
        allowed_models: None,
        force_capabilities: vec!["cache_1h".into()],
        rate_limit: Some(60),
        concurrent_limit: None,
        total_requests: 0,
        total_cost_usd: Usd::ZERO,
        last_used_at: None,
        created_by: None,
        created_at: now(),
        updated_at: now(),
    }
}

fn provider(name: &str) -> Provider {
    Provider {
        id: ProviderId::new(),
        name: name.into(),
        display_name: name.to_uppercase(),
        description: Some("desc".into()),
        website: None,
        billing_type: BillingType::MonthlyQuota,
        quota_usd: Some(Usd::dollars(100)),
        quota_used_usd: Usd::ZERO,
        quota_period_days: 30,
        period_started_at: None,
        expires_at: None,
        rpm_limit: Some(500),
        provider_priority: 10,
        is_active: true,
        config: json!({"note": "x"}),
        created_at: now(),
        updated_at: now(),
    }
}

fn endpoint(p: ProviderId, f: ApiFormat) -> Endpoint {
    Endpoint {
        id: EndpointId::new(),
        provider_id: p,
        api_format: f,
        base_url: "https://api.example.com".into(),
        custom_path: None,
        headers: BTreeMap::from([("x-extra".to_string(), "1".to_string())]),
        timeout: 300,
        max_retries: 3,
        max_concurrent: Some(8),
        proxy: Some(ProxyConfig {
            url: "socks5://127.0.0.1:1080".into(),
            username: Some("u".into()),
            password_sealed: Some("enc:v1:abcd:xyz".into()),
        }),
        is_active: true,
        config: json!({}),
        created_at: now(),
        updated_at: now(),
    }
}

fn pkey(e: &Endpoint, fp: &str) -> ProviderKey {
    ProviderKey {
        id: ProviderKeyId::new(),
        endpoint_id: e.id,
        provider_id: e.provider_id,
        name: format!("k-{fp}"),
        note: None,
        secret_sealed: format!("enc:v1:abcd:{fp}"),
        secret_fingerprint: fp.into(),
        api_key_masked: "sk-ant…1234".into(),
        rate_multiplier: "0.55".parse().unwrap(),
        internal_priority: 50,
        global_priority: Some(3),
        max_concurrent: None,
        rate_limit: Some(100),
        allowed_models: Some(vec!["claude-sonnet-4-5".into()]),
        capabilities: vec!["cache_1h".into()],
        cache_ttl_minutes: 5,
        max_probe_interval_minutes: Some(32),
        expires_at: None,
        is_active: true,
        created_at: now(),
        updated_at: now(),
    }
}

fn global(name: &str) -> GlobalModel {
    GlobalModel {
        id: GlobalModelId::new(),
        name: name.into(),
        display_name: name.into(),
        description: None,
        is_active: true,
        capabilities: ModelCapabilities {
            vision: true,
            context_limit: Some(200_000),
            ..ModelCapabilities::default()
        },
        supported_capabilities: vec!["cache_1h".into(), "context_1m".into()],
        default_tiered_pricing: Some(TieredPricing {
            tiers: vec![
                PriceTier {
                    up_to: Some(200_000),
                    cache_read_per_m: Some("0.3".parse().unwrap()),
                    ..PriceTier::flat(Usd::dollars(3), Usd::dollars(15))
                },
                PriceTier::flat(Usd::dollars(6), "22.5".parse().unwrap()),
            ],
        }),
        default_price_per_request: Some("0.001".parse().unwrap()),
        config: json!({"family": "claude"}),
        usage_count: 0,
        created_at: now(),
        updated_at: now(),
    }
}

fn pmodel(p: ProviderId, g: GlobalModelId, name: &str) -> ProviderModel {
    ProviderModel {
        id: ProviderModelId::new(),
        provider_id: p,
        global_model_id: g,
        provider_model_name: name.into(),
        provider_model_mappings: vec![ModelMapping {
            name: format!("{name}-alt"),
            priority: 2,
            api_formats: Some(vec![ApiFormat::ClaudeCli]),
        }],
        tiered_pricing: None,
        price_per_request: None,
        supports_streaming: Some(true),
        supports_vision: None,
        supports_function_calling: Some(false),
        supports_extended_thinking: None,
        supports_image_generation: None,
        is_active: true,
        config: json!({}),
        created_at: now(),
        updated_at: now(),
    }
}

async fn migrations_are_idempotent(s: &SqlStore) {
    // Opening again re-runs the migrator: nothing to do, nothing breaks.
    s.db().migrate().await.unwrap();
    s.ping().await.unwrap();
    assert_eq!(s.count_users(None).await.unwrap(), 0);
    assert!(s.get_settings().await.unwrap().is_empty());
    assert!(s.list_ip_rules().await.unwrap().is_empty());
}

async fn users_round_trip_filter_and_conflict(s: &SqlStore) {
    let mut a = user("alice@example.com");
    a.role = Role::Admin;
    let b = user("bob@example.com");
    s.insert_user(&a).await.unwrap();
    s.insert_user(&b).await.unwrap();

    let got = s.get_user(a.id).await.unwrap().unwrap();
    assert_eq!(got, a);
    assert_eq!(
        s.find_user_by_login("ALICE@example.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        a.id
    );
    assert_eq!(s.find_user_by_login("bob").await.unwrap().unwrap().id, b.id);
    assert!(s.find_user_by_login("carol").await.unwrap().is_none());

    let dup = user("alice@example.com");
    assert!(matches!(
        s.insert_user(&dup).await,
        Err(StoreError::Conflict(_))
    ));

    let admins = s
        .list_users(
            &UserFilter {
                role: Some(Role::Admin),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!((admins.total, admins.items.len()), (1, 1));
    let search = s
        .list_users(
            &UserFilter {
                search: Some("BO".into()),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(search.items[0].email, "bob@example.com");
    let wildcard = s
        .list_users(
            &UserFilter {
                search: Some("%".into()),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(wildcard.total, 0, "% is a literal in search");
    let page = s
        .list_users(&UserFilter::default(), Page::new(1, 1))
        .await
        .unwrap();
    assert_eq!((page.total, page.items.len()), (2, 1));

    let mut b2 = b.clone();
    b2.is_active = false;
    b2.quota_usd = None;
    b2.allowed_models = None;
    b2.updated_at = Timestamp(b.updated_at.0 + 1);
    s.update_user(&b2).await.unwrap();
    assert_eq!(s.get_user(b.id).await.unwrap().unwrap(), b2);
    assert_eq!(s.count_users(Some(Role::User)).await.unwrap(), 1);

    // Deleting a user takes their keys along.
    let k = api_key(Some(b.id), "hash-b");
    s.insert_api_key(&k).await.unwrap();
    assert!(s.delete_user(b.id).await.unwrap());
    assert!(!s.delete_user(b.id).await.unwrap());
    assert!(s.get_api_key(k.id).await.unwrap().is_none());
}

async fn user_spend_counters_are_atomic(s: &SqlStore) {
    let u = user("spender@example.com");
    s.insert_user(&u).await.unwrap();
    let s2 = Arc::new(s.clone());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let st = s2.clone();
        tasks.push(tokio::spawn(async move {
            st.add_user_spend(u.id, "0.000015".parse().unwrap())
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = s.get_user(u.id).await.unwrap().unwrap();
    assert_eq!(got.used_usd.to_string(), "0.0003");
    assert_eq!(got.total_usd.to_string(), "0.0003");
    // The editable-field update never clobbers counters.
    s.update_user(&u).await.unwrap();
    assert_eq!(
        s.get_user(u.id)
            .await
            .unwrap()
            .unwrap()
            .used_usd
            .to_string(),
        "0.0003"
    );
    assert!(s.reset_user_quota(u.id, now()).await.unwrap());
    let got = s.get_user(u.id).await.unwrap().unwrap();
    assert_eq!(
        (got.used_usd, got.total_usd.to_string().as_str()),
        (Usd::ZERO, "0.0003")
    );
}

async fn api_keys_and_hash_lookup(s: &SqlStore) {
    let u = user("keys@example.com");
    s.insert_user(&u).await.unwrap();
    let k1 = api_key(Some(u.id), "h1");
    let k2 = api_key(None, "h2");
    s.insert_api_key(&k1).await.unwrap();
    s.insert_api_key(&k2).await.unwrap();
    assert!(matches!(
        s.insert_api_key(&api_key(None, "h1")).await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(s.get_api_key_by_hash("h1").await.unwrap().unwrap(), k1);
    assert!(s.get_api_key_by_hash("nope").await.unwrap().is_none());
    let mine = s
        .list_api_keys(
            &ApiKeyFilter {
                user_id: Some(u.id),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(mine.items, vec![k1.clone()]);
    let standalone = s
        .list_api_keys(
            &ApiKeyFilter {
                standalone: Some(true),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(standalone.items, vec![k2.clone()]);

    let mut k1b = k1.clone();
    k1b.name = "renamed".into();
    k1b.expires_at = Some(Timestamp(1_900_000_000_000));
    k1b.allowed_api_formats = Some(vec![ApiFormat::Gemini]);
    s.update_api_key(&k1b).await.unwrap();
    assert_eq!(s.get_api_key(k1.id).await.unwrap().unwrap(), k1b);

    s.record_key_use(k1.id, "0.25".parse().unwrap(), Timestamp(5))
        .await
        .unwrap();
    s.record_key_use(k1.id, "0.25".parse().unwrap(), Timestamp(6))
        .await
        .unwrap();
    let got = s.get_api_key(k1.id).await.unwrap().unwrap();
    assert_eq!(
        (got.total_requests, got.total_cost_usd.to_string().as_str()),
        (2, "0.5")
    );
    assert_eq!(got.last_used_at, Some(Timestamp(6)));
    assert!(s.delete_api_key(k2.id).await.unwrap());
}

async fn balance_ledger_is_exact_under_concurrency(s: &SqlStore) {
    let k = api_key(None, "standalone");
    s.insert_api_key(&k).await.unwrap();
    let top = s
        .change_balance(
            k.id,
            BalanceChange {
                kind: LedgerKind::TopUp,
                amount: Usd::dollars(5),
                reason: Some("initial".into()),
                request_id: None,
                actor_id: None,
                forbid_negative: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(top.balance_after_usd, Usd::dollars(5));

    let shared = Arc::new(s.clone());
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let st = shared.clone();
        tasks.push(tokio::spawn(async move {
            st.change_balance(
                k.id,
                BalanceChange {
                    kind: LedgerKind::Charge,
                    amount: -"0.1".parse::<Usd>().unwrap(),
                    reason: None,
                    request_id: Some(RequestId::new()),
                    actor_id: None,
                    forbid_negative: false,
                },
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = s.get_api_key(k.id).await.unwrap().unwrap();
    assert_eq!(got.balance_usd.to_string(), "2.5");
    let ledger = s.list_ledger(k.id, Page::default()).await.unwrap();
    assert_eq!(ledger.total, 26);
    let sum: Usd = ledger.items.iter().map(|e| e.amount_usd).sum();
    assert_eq!(
        sum, got.balance_usd,
        "the ledger explains the balance exactly"
    );

    // A manual adjustment may not take the balance below zero.
    let err = s
        .change_balance(
            k.id,
            BalanceChange {
                kind: LedgerKind::Adjustment,
                amount: -Usd::dollars(3),
                reason: None,
                request_id: None,
                actor_id: None,
                forbid_negative: true,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("2.5")),
        "{err}"
    );
    assert_eq!(
        s.list_ledger(k.id, Page::default()).await.unwrap().total,
        26
    );
    let missing = s
        .change_balance(
            ApiKeyId::new(),
            BalanceChange {
                kind: LedgerKind::TopUp,
                amount: Usd::dollars(1),
                reason: None,
                request_id: None,
                actor_id: None,
                forbid_negative: true,
            },
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

async fn providers_endpoints_keys_cascade(s: &SqlStore) {
    let p = provider("anthropic-main");
    s.insert_provider(&p).await.unwrap();
    assert!(matches!(
        s.insert_provider(&provider("anthropic-main")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_provider_by_name("anthropic-main")
            .await
            .unwrap()
            .unwrap(),
        p
    );

    let e = endpoint(p.id, ApiFormat::Claude);
    s.insert_endpoint(&e).await.unwrap();
    let got = s.get_endpoint(e.id).await.unwrap().unwrap();
    assert_eq!(got, e);
    assert_eq!(
        got.proxy.unwrap().password_sealed.as_deref(),
        Some("enc:v1:abcd:xyz"),
        "the sealed proxy password is stored"
    );
    assert!(matches!(
        s.insert_endpoint(&endpoint(p.id, ApiFormat::Claude)).await,
        Err(StoreError::Conflict(_))
    ));
    let e2 = endpoint(p.id, ApiFormat::ClaudeCli);
    s.insert_endpoint(&e2).await.unwrap();
    let mut e2b = e2.clone();
    e2b.base_url = "https://relay.example.com".into();
    e2b.proxy = None;
    s.update_endpoint(&e2b).await.unwrap();
    assert_eq!(s.get_endpoint(e2.id).await.unwrap().unwrap(), e2b);
    assert_eq!(s.list_endpoints(Some(p.id)).await.unwrap().len(), 2);

    let k = pkey(&e, "fp1");
    s.insert_provider_key(&k).await.unwrap();
    assert!(matches!(
        s.insert_provider_key(&pkey(&e, "fp1")).await,
        Err(StoreError::Conflict(_))
    ));
    s.insert_provider_key(&pkey(&e2, "fp1")).await.unwrap();
    assert_eq!(s.get_provider_key(k.id).await.unwrap().unwrap(), k);
    let mut kb = k.clone();
    kb.max_concurrent = Some(4);
    kb.rate_multiplier = Multiplier::ONE;
    kb.is_active = false;
    s.update_provider_key(&kb).await.unwrap();
    assert_eq!(s.get_provider_key(k.id).await.unwrap().unwrap(), kb);
    assert!(
        s.replace_provider_key_secret(k.id, "enc:v1:abcd:new", "fp9", "sk…9999")
            .await
            .unwrap()
    );
    let got = s.get_provider_key(k.id).await.unwrap().unwrap();
    assert_eq!(
        (got.secret_fingerprint.as_str(), got.api_key_masked.as_str()),
        ("fp9", "sk…9999")
    );
    assert_eq!(s.list_provider_keys(Some(e.id)).await.unwrap().len(), 1);
    assert_eq!(s.list_provider_keys(None).await.unwrap().len(), 2);

    s.add_provider_spend(p.id, "1.5".parse().unwrap())
        .await
        .unwrap();
    s.add_provider_spend(p.id, "1.5".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        s.get_provider(p.id).await.unwrap().unwrap().quota_used_usd,
        Usd::dollars(3)
    );
    assert!(s.reset_provider_quota(p.id, now()).await.unwrap());
    assert_eq!(
        s.get_provider(p.id).await.unwrap().unwrap().quota_used_usd,
        Usd::ZERO
    );

    let mut pb = s.get_provider(p.id).await.unwrap().unwrap();
    assert!(
        pb.period_started_at.is_some(),
        "a reset starts a new period"
    );
    pb.provider_priority = 1;
    pb.billing_type = BillingType::FreeTier;
    s.update_provider(&pb).await.unwrap();
    assert_eq!(s.get_provider(p.id).await.unwrap().unwrap(), pb);

    let g = global("claude-sonnet-4-5");
    s.insert_global_model(&g).await.unwrap();
    s.insert_provider_model(&pmodel(p.id, g.id, "claude-sonnet-4-5-20250929"))
        .await
        .unwrap();

    let other = provider("openai-main");
    s.insert_provider(&other).await.unwrap();
    let list = s
        .list_providers(
            &ProviderFilter {
                search: Some("ANTHROPIC".into()),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(list.total, 1);

    assert!(s.delete_provider(p.id).await.unwrap());
    assert!(s.list_endpoints(Some(p.id)).await.unwrap().is_empty());
    assert!(s.list_provider_keys(None).await.unwrap().is_empty());
    assert!(
        s.list_provider_models(Some(p.id), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.get_global_model(g.id).await.unwrap().is_some(),
        "global models survive"
    );
}

async fn models_and_pricing_round_trip(s: &SqlStore) {
    let g = global("claude-sonnet-4-5");
    s.insert_global_model(&g).await.unwrap();
    assert_eq!(s.get_global_model(g.id).await.unwrap().unwrap(), g);
    assert_eq!(
        s.get_global_model_by_name("claude-sonnet-4-5")
            .await
            .unwrap()
            .unwrap(),
        g
    );
    assert!(matches!(
        s.insert_global_model(&global("claude-sonnet-4-5")).await,
        Err(StoreError::Conflict(_))
    ));

    let mut g2 = g.clone();
    g2.default_tiered_pricing = None;
    g2.default_price_per_request = None;
    g2.capabilities.streaming = false;
    s.update_global_model(&g2).await.unwrap();
    assert_eq!(s.get_global_model(g.id).await.unwrap().unwrap(), g2);
    s.bump_global_model_usage(g.id, 3).await.unwrap();
    assert_eq!(
        s.get_global_model(g.id).await.unwrap().unwrap().usage_count,
        3
    );

    let p = provider("p");
    s.insert_provider(&p).await.unwrap();
    let mut pm = pmodel(p.id, g.id, "claude-sonnet-4-5-20250929");
    pm.tiered_pricing = g.default_tiered_pricing.clone();
    pm.price_per_request = Some("0.002".parse().unwrap());
    s.insert_provider_model(&pm).await.unwrap();
    assert_eq!(s.get_provider_model(pm.id).await.unwrap().unwrap(), pm);
    assert!(matches!(
        s.insert_provider_model(&pmodel(p.id, g.id, "claude-sonnet-4-5-20250929"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let mut pm2 = pm.clone();
    pm2.provider_model_mappings.clear();
    pm2.supports_vision = Some(false);
    s.update_provider_model(&pm2).await.unwrap();
    assert_eq!(
        s.list_provider_models(None, Some(g.id)).await.unwrap(),
        vec![pm2]
    );

    let list = s
        .list_global_models(
            &GlobalModelFilter {
                search: Some("sonnet".into()),
                is_active: Some(true),
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(list.total, 1);
    assert!(s.delete_global_model(g.id).await.unwrap());
    assert!(
        s.list_provider_models(Some(p.id), None)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn settings_audit_announcements_ip_rules(s: &SqlStore) {
    s.put_setting("log_level", &json!("full"), None)
        .await
        .unwrap();
    s.put_setting("log_level", &json!("headers"), None)
        .await
        .unwrap();
    s.put_setting("masked_headers", &json!(["x-secret"]), None)
        .await
        .unwrap();
    let all = s.get_settings().await.unwrap();
    assert_eq!(all.get("log_level"), Some(&json!("headers")));
    assert_eq!(all.len(), 2);
    assert!(s.delete_setting("log_level").await.unwrap());
    assert_eq!(s.get_settings().await.unwrap().len(), 1);

    let actor = UserId::new();
    for (i, action) in ["user.create", "user.delete", "provider.update"]
        .iter()
        .enumerate()
    {
        s.insert_audit(&AuditEntry {
            id: AuditId::new(),
            actor_id: Some(actor),
            actor_email: Some("admin@example.com".into()),
            action: (*action).into(),
            target_type: Some("user".into()),
            target_id: Some(format!("t{i}")),
            details: json!({"i": i}),
            ip: Some("127.0.0.1".into()),
            created_at: Timestamp(1000 + i as i64),
        })
        .await
        .unwrap();
    }
    let users = s
        .list_audit(
            &AuditFilter {
                action_prefix: Some("user.".into()),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(users.total, 2);
    assert_eq!(users.items[0].action, "user.delete", "newest first");
    let since = s
        .list_audit(
            &AuditFilter {
                since: Some(Timestamp(1002)),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(since.items.len(), 1);
    let search = s
        .list_audit(
            &AuditFilter {
                search: Some("t1".into()),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(search.items[0].details, json!({"i": 1}));

    let t = now();
    let mk = |title: &str, pinned: bool, active: bool, end: Option<Timestamp>| Announcement {
        id: AnnouncementId::new(),
        title: title.into(),
        content: "**hello**".into(),
        kind: AnnouncementKind::Info,
        priority: 0,
        is_active: active,
        is_pinned: pinned,
        start_time: None,
        end_time: end,
        author_id: None,
        created_at: t,
        updated_at: t,
    };
    let a = mk("a", false, true, None);
    let b = mk("b", true, true, None);
    let c = mk("c", false, false, None);
    let d = mk("d", false, true, Some(Timestamp(t.0 - 1)));
    for x in [&a, &b, &c, &d] {
        s.insert_announcement(x).await.unwrap();
    }
    let visible = s
        .list_announcements(Some(t), Page::default())
        .await
        .unwrap();
    let titles: Vec<_> = visible.items.iter().map(|x| x.title.as_str()).collect();
    assert_eq!(
        titles,
        vec!["b", "a"],
        "pinned first; inactive and ended hidden"
    );
    assert_eq!(
        s.list_announcements(None, Page::default())
            .await
            .unwrap()
            .total,
        4
    );
    let mut a2 = a.clone();
    a2.kind = AnnouncementKind::Maintenance;
    a2.is_active = false;
    s.update_announcement(&a2).await.unwrap();
    assert_eq!(s.get_announcement(a.id).await.unwrap().unwrap(), a2);
    assert!(s.delete_announcement(a.id).await.unwrap());

    let r = IpRule {
        id: IpRuleId::new(),
        cidr: "10.0.0.0/8".parse().unwrap(),
        action: IpAction::Block,
        note: Some("office".into()),
        expires_at: None,
        created_by: None,
        created_at: t,
    };
    s.insert_ip_rule(&r).await.unwrap();
    let mut dup = r.clone();
    dup.id = IpRuleId::new();
    assert!(matches!(
        s.insert_ip_rule(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.list_ip_rules().await.unwrap(), vec![r.clone()]);
    assert!(s.delete_ip_rule(r.id).await.unwrap());
}

async fn sessions_rotate_with_compare_and_swap(s: &SqlStore) {
    let u = user("sess@example.com");
    s.insert_user(&u).await.unwrap();
    let sess = Session {
        id: SessionId::new(),
        user_id: u.id,
        refresh_hash: "r1".into(),
        previous_hash: None,
        expires_at: Timestamp(now().0 + 60_000),
        revoked_at: None,
        ip: Some("127.0.0.1".into()),
        user_agent: None,
        created_at: now(),
        last_refreshed_at: None,
    };
    s.insert_session(&sess).await.unwrap();
    assert!(
        matches!(s.find_refresh("r1").await.unwrap(), RefreshLookup::Current(x) if x.id == sess.id)
    );
    let exp = Timestamp(now().0 + 120_000);
    assert!(
        s.rotate_session(sess.id, "r1", "r2", exp, now())
            .await
            .unwrap()
    );
    assert!(
        !s.rotate_session(sess.id, "r1", "r3", exp, now())
            .await
            .unwrap(),
        "stale token loses"
    );
    assert!(matches!(
        s.find_refresh("r1").await.unwrap(),
        RefreshLookup::Reused(_)
    ));
    assert!(matches!(
        s.find_refresh("r2").await.unwrap(),
        RefreshLookup::Current(_)
    ));
    assert_eq!(s.find_refresh("zzz").await.unwrap(), RefreshLookup::Unknown);
    assert!(s.revoke_session(sess.id, now()).await.unwrap());
    assert!(
        !s.rotate_session(sess.id, "r2", "r4", exp, now())
            .await
            .unwrap(),
        "revoked cannot rotate"
    );
    assert!(
        s.get_session(sess.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    let mut s2 = sess.clone();
    s2.id = SessionId::new();
    s2.refresh_hash = "other".into();
    s2.revoked_at = None;
    s.insert_session(&s2).await.unwrap();
    assert_eq!(s.revoke_user_sessions(u.id, now()).await.unwrap(), 1);
}

async fn usage_lifecycle_bodies_and_traces(s: &SqlStore) {
    let id = RequestId::new();
    let user = UserId::new();
    let mut rec = UsageRecord {
        id,
        client_request_id: Some("client-123".into()),
        user_id: Some(user),
        api_key_id: Some(ApiKeyId::new()),
        provider_id: None,
        endpoint_id: None,
        provider_key_id: None,
        global_model_id: None,
        requested_model: "claude-sonnet-4-5".into(),
        upstream_model: None,
        api_format: ApiFormat::ClaudeCli,
        endpoint_api_format: None,
        is_stream: true,
        status: UsageStatus::Pending,
        status_code: None,
        error_type: None,
        error_message: None,
        tokens: TokenUsage::default(),
        cost: CostBreakdown::default(),
        unpriced: false,
        latency_ms: None,
        ttfb_ms: None,
        client_ip: Some("127.0.0.1".into()),
        user_agent: Some("claude-cli/2.1".into()),
        created_at: now(),
        updated_at: now(),
    };
    s.write_batch(&UsageBatch {
        records: vec![rec.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.get_usage(id).await.unwrap().unwrap(), rec);

    rec.status = UsageStatus::Completed;
    rec.status_code = Some(200);
    rec.provider_id = Some(ProviderId::new());
    rec.upstream_model = Some("claude-sonnet-4-5-20250929".into());
    rec.tokens = TokenUsage {
        input: 10,
        output: 20,
        cache_creation_5m: 3,
        cache_creation_1h: 4,
        cache_read: 5,
        reasoning: 1,
    };
    rec.cost = CostBreakdown {
        tier_index: 1,
        tier_up_to: None,
        unit_prices: Some(PriceTier::flat(Usd::dollars(3), Usd::dollars(15)).unit_prices()),
        input: "0.00003".parse().unwrap(),
        output: "0.0003".parse().unwrap(),
        cache_creation_5m: Usd::from_nanos(11),
        cache_creation_1h: Usd::from_nanos(24),
        cache_read: Usd::from_nanos(2),
        per_request: Usd::ZERO,
        total: Usd::from_nanos(330_037),
        actual_total: Usd::from_nanos(181_520),
        multiplier: "0.55".parse().unwrap(),
    };
    rec.latency_ms = Some(1234);
    rec.ttfb_ms = Some(120);
    let other = UsageRecord {
        id: RequestId::new(),
        user_id: Some(UserId::new()),
        status: UsageStatus::Failed,
        ..rec.clone()
    };
    s.write_batch(&UsageBatch {
        records: vec![rec.clone(), other.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.get_usage(id).await.unwrap().unwrap(), rec);

    let mine = s
        .list_usage(
            &UsageFilter {
                user_id: Some(user),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(mine.items, vec![rec.clone()]);
    let failed = s
        .list_usage(
            &UsageFilter {
                status: Some("failed".into()),
                ..Default::default()
            },
            Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(failed.total, 1);

    let bodies = UsageBodies {
        request_headers: Some(json!({"x-api-key": "sk-a…bcd"})),
        request_body: Some("{\"model\":\"x\"}".into()),
        response_headers: None,
        response_body: Some("data: {}\n\n".into()),
    };
    s.write_batch(&UsageBatch {
        bodies: vec![(id, bodies.clone())],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.get_usage_bodies(id).await.unwrap().unwrap(), bodies);
    assert!(s.get_usage_bodies(other.id).await.unwrap().is_none());

    // Served by its first attempt: no trace rows, one step synthesised from the record.
    let served = UsageRecord {
        id: RequestId::new(),
        provider_key_id: Some(ProviderKeyId::new()),
        endpoint_id: Some(EndpointId::new()),
        ..rec.clone()
    };
    s.write_batch(&UsageBatch {
        records: vec![served.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let one = s.list_traces(served.id).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].status, TraceStatus::Success);
    assert_eq!(one[0].provider_key_id, served.provider_key_id);
    assert_eq!(one[0].endpoint_id, served.endpoint_id);
    assert_eq!(one[0].status_code, Some(200));
    assert_eq!(one[0].latency_ms, Some(1234));
    assert!(
        s.list_traces(other.id).await.unwrap().is_empty(),
        "failed: nothing to synthesise"
    );
    assert!(s.list_traces(RequestId::new()).await.unwrap().is_empty());

    let mk = |ci: u32, ri: u32, status: TraceStatus| AttemptTrace {
        id: TraceId::new(),
        request_id: id,
        candidate_index: ci,
        retry_index: ri,
        provider_id: None,
        endpoint_id: None,
        provider_key_id: None,
        status,
        skip_reason: (status == TraceStatus::Skipped).then(|| "breaker open".to_string()),
        status_code: (status == TraceStatus::Failed).then_some(429),
        error_type: None,
        error_message: None,
        latency_ms: Some(10),
        concurrency: Some(2),
        conversion: None,
        started_at: now(),
        finished_at: Some(now()),
    };
    let t2 = mk(1, 0, TraceStatus::Success);
    let t1 = mk(0, 0, TraceStatus::Failed);
    let t0 = mk(0, 1, TraceStatus::Skipped);
    s.write_batch(&UsageBatch {
        traces: vec![t2.clone(), t1.clone(), t0.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let got = s.list_traces(id).await.unwrap();
    assert_eq!(got, vec![t1, t0, t2], "ordered by candidate, then retry");
}

async fn config_changes_are_all_or_nothing(s: &SqlStore) {
    let g = global("gpt-5");
    let p = provider("openai");
    let e = endpoint(p.id, ApiFormat::Openai);
    let k = pkey(&e, "fp");
    let pm = pmodel(p.id, g.id, "gpt-5-2025");
    s.apply_config(&[
        ConfigChange::InsertGlobalModel(g.clone()),
        ConfigChange::InsertProvider(p.clone()),
        ConfigChange::InsertEndpoint(e.clone()),
        ConfigChange::InsertProviderKey(k.clone()),
        ConfigChange::InsertProviderModel(pm.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(s.get_provider_key(k.id).await.unwrap().unwrap(), k);
    assert_eq!(s.get_endpoint(e.id).await.unwrap().unwrap(), e);

    // The second change violates a unique rule: the first must not survive either.
    let p2 = provider("azure");
    let result = s
        .apply_config(&[
            ConfigChange::InsertProvider(p2.clone()),
            ConfigChange::InsertGlobalModel(global("gpt-5")),
        ])
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))));
    assert!(s.get_provider(p2.id).await.unwrap().is_none());

    let mut p3 = p.clone();
    p3.display_name = "OpenAI (main)".into();
    let mut pm3 = pm.clone();
    pm3.price_per_request = Some(Usd::dollars(1));
    s.apply_config(&[
        ConfigChange::UpdateProvider(p3.clone()),
        ConfigChange::UpdateProviderModel(pm3.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(s.get_provider(p.id).await.unwrap().unwrap(), p3);
    assert_eq!(s.get_provider_model(pm.id).await.unwrap().unwrap(), pm3);
}

async fn billing_applies_exactly_once(s: &SqlStore) {
    let u = user("payer@example.com");
    s.insert_user(&u).await.unwrap();
    let ukey = api_key(Some(u.id), "payer-key");
    s.insert_api_key(&ukey).await.unwrap();
    let standalone = api_key(None, "prepaid");
    s.insert_api_key(&standalone).await.unwrap();
    s.change_balance(
        standalone.id,
        BalanceChange {
            kind: LedgerKind::TopUp,
            amount: Usd::dollars(1),
            reason: None,
            request_id: None,
            actor_id: None,
            forbid_negative: true,
        },
    )
    .await
    .unwrap();
    let p = provider("billed");
    s.insert_provider(&p).await.unwrap();
    let g = global("billed-model");
    s.insert_global_model(&g).await.unwrap();

    let record = |key: &ApiKey, status: UsageStatus| UsageRecord {
        id: RequestId::new(),
        client_request_id: None,
        user_id: key.user_id,
        api_key_id: Some(key.id),
        provider_id: Some(p.id),
        endpoint_id: None,
        provider_key_id: None,
        global_model_id: Some(g.id),
        requested_model: "billed-model".into(),
        upstream_model: None,
        api_format: ApiFormat::Claude,
        endpoint_api_format: Some(ApiFormat::Claude),
        is_stream: false,
        status,
        status_code: Some(200),
        error_type: None,
        error_message: None,
        tokens: TokenUsage::default(),
        cost: CostBreakdown::default(),
        unpriced: false,
        latency_ms: Some(5),
        ttfb_ms: None,
        client_ip: None,
        user_agent: None,
        created_at: now(),
        updated_at: now(),
    };
    let bill = |r: &UsageRecord, standalone: bool, charged: &str, actual: &str| Billing {
        request_id: r.id,
        user_id: r.user_id,
        api_key_id: r.api_key_id,
        standalone,
        charged: charged.parse().unwrap(),
        provider_id: r.provider_id,
        actual: actual.parse().unwrap(),
        global_model_id: r.global_model_id,
        at: now(),
        user_period_start: None,
        provider_period_start: None,
    };
    let r1 = record(&ukey, UsageStatus::Completed);
    let r2 = record(&standalone, UsageStatus::Completed);
    let pending = record(&ukey, UsageStatus::Pending);
    let batch = UsageBatch {
        records: vec![r1.clone(), r2.clone(), pending.clone()],
        billing: vec![
            bill(&r1, false, "0.037", "0.02035"),
            bill(&r2, true, "0.25", "0.25"),
            bill(&pending, false, "9", "9"),
        ],
        ..Default::default()
    };
    assert_eq!(
        s.write_batch(&batch).await.unwrap(),
        2,
        "the pending record is not billed"
    );
    assert_eq!(
        s.write_batch(&batch).await.unwrap(),
        0,
        "a retried batch charges nothing twice"
    );

    let got = s.get_user(u.id).await.unwrap().unwrap();
    assert_eq!(
        (got.used_usd.to_string(), got.total_usd.to_string()),
        ("0.037".to_string(), "0.037".to_string())
    );
    let k = s.get_api_key(ukey.id).await.unwrap().unwrap();
    assert_eq!(
        (k.total_requests, k.total_cost_usd.to_string()),
        (1, "0.037".to_string())
    );
    let sk = s.get_api_key(standalone.id).await.unwrap().unwrap();
    assert_eq!(sk.balance_usd.to_string(), "0.75");
    let ledger = s.list_ledger(standalone.id, Page::default()).await.unwrap();
    assert_eq!(ledger.items[0].kind, LedgerKind::Charge);
    assert_eq!(ledger.items[0].request_id, Some(r2.id));
    assert_eq!(ledger.items[0].amount_usd.to_string(), "-0.25");
    assert_eq!(
        s.get_provider(p.id)
            .await
            .unwrap()
            .unwrap()
            .quota_used_usd
            .to_string(),
        "0.27035"
    );
    assert_eq!(
        s.get_global_model(g.id).await.unwrap().unwrap().usage_count,
        2
    );

    // The pending request completes later: now it is billed, once.
    let mut done = pending.clone();
    done.status = UsageStatus::Completed;
    let later = UsageBatch {
        records: vec![done.clone()],
        billing: vec![bill(&done, false, "0.5", "0")],
        ..Default::default()
    };
    assert_eq!(s.write_batch(&later).await.unwrap(), 1);
    assert_eq!(
        s.get_user(u.id)
            .await
            .unwrap()
            .unwrap()
            .used_usd
            .to_string(),
        "0.537"
    );

    // A large batch (several statements' worth) with many charges to one prepaid key: every
    // ledger entry shows the balance right after its own charge, and they add up.
    let many: Vec<UsageRecord> = (0..120)
        .map(|_| record(&standalone, UsageStatus::Completed))
        .collect();
    let batch = UsageBatch {
        billing: many
            .iter()
            .map(|r| bill(r, true, "0.001", "0.001"))
            .collect(),
        records: many,
        ..Default::default()
    };
    assert_eq!(s.write_batch(&batch).await.unwrap(), 120);
    let sk = s.get_api_key(standalone.id).await.unwrap().unwrap();
    assert_eq!(sk.balance_usd.to_string(), "0.63");
    let ledger = s
        .list_ledger(standalone.id, Page::new(1000, 0))
        .await
        .unwrap();
    let charges: Vec<&LedgerEntry> = ledger
        .items
        .iter()
        .filter(|e| e.kind == LedgerKind::Charge)
        .collect();
    assert_eq!(charges.len(), 121);
    let mut afters: Vec<i64> = charges
        .iter()
        .map(|e| e.balance_after_usd.nanos())
        .collect();
    afters.sort_unstable();
    let want: Vec<i64> = (0..120).map(|i| 630_000_000 + i * 1_000_000).collect();
    assert_eq!(
        afters[..120],
        want[..],
        "consecutive balances, one per charge"
    );
    assert_eq!(
        s.get_provider(p.id)
            .await
            .unwrap()
            .unwrap()
            .quota_used_usd
            .to_string(),
        "0.39035"
    );
}

/// Charges carry the start of the quota period they belong to: one period accumulates, a later
/// one restarts the count, and a charge for a period older than the stored one reaches only the
/// lifetime total.
async fn quota_periods_reset_in_the_database(s: &SqlStore) {
    let t = |x: &str| Timestamp::parse_rfc3339(x).unwrap();
    let mut u = user("periodic@example.com");
    u.quota_period = QuotaPeriod::Daily;
    u.period_started_at = None;
    s.insert_user(&u).await.unwrap();
    let ukey = api_key(Some(u.id), "periodic-key");
    s.insert_api_key(&ukey).await.unwrap();
    let mut p = provider("periodic");
    p.quota_period_days = 7;
    p.period_started_at = Some(t("2026-03-01T06:00:00Z"));
    s.insert_provider(&p).await.unwrap();

    // One completed record + billing per charge: (user period, provider period, charged, actual).
    let charge = |user_start: &str, provider_start: &str, charged: &str, actual: &str| {
        let (us, ps) = (t(user_start), t(provider_start));
        let rec = UsageRecord {
            id: RequestId::new(),
            client_request_id: None,
            user_id: Some(u.id),
            api_key_id: Some(ukey.id),
            provider_id: Some(p.id),
            endpoint_id: None,
            provider_key_id: None,
            global_model_id: None,
            requested_model: "m".into(),
            upstream_model: None,
            api_format: ApiFormat::Claude,
            endpoint_api_format: Some(ApiFormat::Claude),
            is_stream: false,
            status: UsageStatus::Completed,
            status_code: Some(200),
            error_type: None,
            error_message: None,
            tokens: TokenUsage::default(),
            cost: CostBreakdown::default(),
            unpriced: false,
            latency_ms: Some(5),
            ttfb_ms: None,
            client_ip: None,
            user_agent: None,
            created_at: us,
            updated_at: us,
        };
        let bill = Billing {
            request_id: rec.id,
            user_id: Some(u.id),
            api_key_id: Some(ukey.id),
            standalone: false,
            charged: charged.parse().unwrap(),
            provider_id: Some(p.id),
            actual: actual.parse().unwrap(),
            global_model_id: None,
            at: us,
            user_period_start: Some(us),
            provider_period_start: Some(ps),
        };
        (rec, bill)
    };
    let write = |charges: Vec<(UsageRecord, Billing)>| async move {
        let (records, billing): (Vec<_>, Vec<_>) = charges.into_iter().unzip();
        let n = billing.len();
        let batch = UsageBatch {
            records,
            billing,
            ..Default::default()
        };
        assert_eq!(s.write_batch(&batch).await.unwrap(), n);
    };
    let user_state = || async {
        let got = s.get_user(u.id).await.unwrap().unwrap();
        (
            got.used_usd.to_string(),
            got.total_usd.to_string(),
            got.period_started_at,
        )
    };
    let provider_state = || async {
        let got = s.get_provider(p.id).await.unwrap().unwrap();
        (got.quota_used_usd.to_string(), got.period_started_at)
    };
    let (d1, d2) = ("2026-03-10T00:00:00Z", "2026-03-11T00:00:00Z");
    let (w1, w2) = ("2026-03-08T06:00:00Z", "2026-03-15T06:00:00Z");

    // P1: no stored user period yet (starts it); the provider's stored period is older (resets).
    write(vec![
        charge(d1, w1, "1", "0.5"),
        charge(d1, w1, "2", "0.25"),
    ])
    .await;
    assert_eq!(
        user_state().await,
        ("3".into(), "3".into(), Some(t(d1))),
        "P1 charges accumulate"
    );
    assert_eq!(provider_state().await, ("0.75".into(), Some(t(w1))));
    write(vec![charge(d1, w1, "0.5", "0.125")]).await;
    assert_eq!(
        user_state().await,
        ("3.5".into(), "3.5".into(), Some(t(d1)))
    );
    assert_eq!(provider_state().await, ("0.875".into(), Some(t(w1))));

    // P2 (and a P1 straggler in the same batch, applied first): restart at P2's charge.
    write(vec![charge(d2, w2, "4", "2"), charge(d1, w1, "0.25", "1")]).await;
    assert_eq!(
        user_state().await,
        ("4".into(), "7.75".into(), Some(t(d2))),
        "a later period restarts the count"
    );
    assert_eq!(provider_state().await, ("2".into(), Some(t(w2))));

    // A late P1 charge after P2 began: lifetime spend only.
    write(vec![charge(d1, w1, "10", "10")]).await;
    assert_eq!(
        user_state().await,
        ("4".into(), "17.75".into(), Some(t(d2))),
        "a late charge for an older period neither resets nor counts in the current one"
    );
    assert_eq!(provider_state().await, ("2".into(), Some(t(w2))));

    // A stored start inside the period (a quota reset at 14:00): that day's charges count.
    s.reset_user_quota(u.id, t("2026-03-11T14:00:00Z"))
        .await
        .unwrap();
    write(vec![charge(d2, w2, "1.5", "0")]).await;
    assert_eq!(
        user_state().await,
        (
            "1.5".into(),
            "19.25".into(),
            Some(t("2026-03-11T14:00:00Z"))
        ),
        "charges after a mid-period reset count in that period"
    );

    // Without period tracking, charges simply accumulate and leave the start alone.
    let (rec, mut bill) = charge(d1, w1, "0.75", "0.5");
    bill.user_period_start = None;
    bill.provider_period_start = None;
    write(vec![(rec, bill)]).await;
    assert_eq!(
        user_state().await,
        ("2.25".into(), "20".into(), Some(t("2026-03-11T14:00:00Z")))
    );
    assert_eq!(provider_state().await, ("2.5".into(), Some(t(w2))));

    // Monthly periods: a stored start mid-month counts until the 1st of the next month.
    let mut m = user("monthly@example.com");
    m.quota_period = QuotaPeriod::Monthly;
    m.period_started_at = Some(t("2026-03-11T14:00:00Z"));
    s.insert_user(&m).await.unwrap();
    let mkey = api_key(Some(m.id), "monthly-key");
    s.insert_api_key(&mkey).await.unwrap();
    let monthly = |start: &str, charged: &str| {
        let (mut rec, mut bill) = charge(start, w2, charged, "0");
        rec.user_id = Some(m.id);
        rec.api_key_id = Some(mkey.id);
        bill.user_id = Some(m.id);
        bill.api_key_id = Some(mkey.id);
        bill.provider_id = None;
        (rec, bill)
    };
    write(vec![monthly("2026-03-01T00:00:00Z", "1")]).await;
    write(vec![monthly("2026-02-01T00:00:00Z", "5")]).await;
    let got = s.get_user(m.id).await.unwrap().unwrap();
    assert_eq!(
        (got.used_usd.to_string(), got.total_usd.to_string()),
        ("1".into(), "6".into()),
        "March counts; February arrived late"
    );
    write(vec![monthly("2026-04-01T00:00:00Z", "2")]).await;
    let got = s.get_user(m.id).await.unwrap().unwrap();
    assert_eq!(
        (
            got.used_usd.to_string(),
            got.total_usd.to_string(),
            got.period_started_at
        ),
        ("2".into(), "8".into(), Some(t("2026-04-01T00:00:00Z")))
    );
}

/// Successes come from completed records served by a key, failures from failed attempt traces
/// that are not client errors; each in the bucket of its own time.
async fn health_timeline_counts_attempts_per_bucket(s: &SqlStore) {
    let p = provider("healthy");
    s.insert_provider(&p).await.unwrap();
    let claude = endpoint(p.id, ApiFormat::Claude);
    s.insert_endpoint(&claude).await.unwrap();
    let openai = endpoint(p.id, ApiFormat::Openai);
    s.insert_endpoint(&openai).await.unwrap();
    let k1 = pkey(&claude, "h1");
    s.insert_provider_key(&k1).await.unwrap();
    let k2 = pkey(&claude, "h2");
    s.insert_provider_key(&k2).await.unwrap();
    let k3 = pkey(&openai, "h3");
    s.insert_provider_key(&k3).await.unwrap();

    // Ten one-minute buckets from `base`.
    let base = Timestamp::parse_rfc3339("2026-05-01T12:00:00Z").unwrap();
    let at = |min: i64, sec: i64| base.plus_secs(min * 60 + sec);
    let record =
        |k: &ProviderKey, e: &Endpoint, status: UsageStatus, when: Timestamp| UsageRecord {
            id: RequestId::new(),
            client_request_id: None,
            user_id: None,
            api_key_id: None,
            provider_id: Some(p.id),
            endpoint_id: Some(e.id),
            provider_key_id: Some(k.id),
            global_model_id: None,
            requested_model: "m".into(),
            upstream_model: None,
            api_format: e.api_format,
            endpoint_api_format: Some(e.api_format),
            is_stream: false,
            status,
            status_code: Some(200),
            error_type: None,
            error_message: None,
            tokens: TokenUsage::default(),
            cost: CostBreakdown::default(),
            unpriced: false,
            latency_ms: Some(5),
            ttfb_ms: None,
            client_ip: None,
            user_agent: None,
            created_at: when,
            updated_at: when.plus_secs(1),
        };
    let trace =
        |r: &UsageRecord, k: &ProviderKey, error: Option<&str>, when: Timestamp| AttemptTrace {
            id: TraceId::new(),
            request_id: r.id,
            candidate_index: 0,
            retry_index: 0,
            provider_id: Some(p.id),
            endpoint_id: Some(k.endpoint_id),
            provider_key_id: Some(k.id),
            status: TraceStatus::Failed,
            skip_reason: None,
            status_code: Some(500),
            error_type: error.map(str::to_string),
            error_message: None,
            latency_ms: Some(5),
            concurrency: None,
            conversion: None,
            started_at: when,
            finished_at: Some(when),
        };
    let mut records = Vec::new();
    let mut traces = Vec::new();
    // Bucket 0: two first-attempt successes on k1, one on the OpenAI key.
    records.push(record(&k1, &claude, UsageStatus::Completed, at(0, 5)));
    records.push(record(&k1, &claude, UsageStatus::Completed, at(0, 59)));
    records.push(record(&k3, &openai, UsageStatus::Completed, at(0, 30)));
    // Bucket 1: k1 fails with a server error, then k2 serves the request: one each.
    let retried = record(&k2, &claude, UsageStatus::Completed, at(1, 0));
    traces.push(trace(&retried, &k1, Some("server_error"), at(1, 0)));
    let mut ok = trace(&retried, &k2, None, at(1, 2));
    ok.status = TraceStatus::Success;
    ok.candidate_index = 1;
    traces.push(ok);
    records.push(retried);
    // Bucket 2: a client error (the request's fault) and a skipped candidate: no data.
    let mut refused = record(&k1, &claude, UsageStatus::Failed, at(2, 10));
    refused.provider_key_id = None;
    refused.error_type = Some("invalid_request".into());
    traces.push(trace(&refused, &k1, Some("invalid_request"), at(2, 10)));
    let mut skipped = trace(&refused, &k2, None, at(2, 10));
    skipped.status = TraceStatus::Skipped;
    skipped.candidate_index = 1;
    traces.push(skipped);
    records.push(refused);
    // Bucket 3: only failures (one without an error type); the request failed overall.
    let mut failed = record(&k1, &claude, UsageStatus::Failed, at(3, 0));
    failed.error_type = Some("overloaded".into());
    traces.push(trace(&failed, &k1, Some("overloaded"), at(3, 0)));
    traces.push(trace(&failed, &k2, None, at(3, 30)));
    records.push(failed);
    // A pending request in bucket 4 and a success without a key: neither counts.
    records.push(record(&k1, &claude, UsageStatus::Pending, at(4, 0)));
    let mut keyless = record(&k1, &claude, UsageStatus::Completed, at(4, 0));
    keyless.provider_key_id = None;
    records.push(keyless);
    // Last bucket's final millisecond, and `until` itself (excluded); before `since`.
    records.push(record(
        &k1,
        &claude,
        UsageStatus::Completed,
        Timestamp::from_millis(at(10, 0).millis() - 1),
    ));
    records.push(record(&k1, &claude, UsageStatus::Completed, at(10, 0)));
    records.push(record(
        &k1,
        &claude,
        UsageStatus::Completed,
        Timestamp::from_millis(base.millis() - 1),
    ));
    s.write_batch(&UsageBatch {
        records,
        traces,
        ..Default::default()
    })
    .await
    .unwrap();

    let query = HealthQuery {
        since: base,
        until: at(10, 0),
        buckets: 10,
        api_format: None,
        endpoint_id: None,
        provider_key_id: None,
    };
    let summary = |b: &[HealthBucket]| -> Vec<(u64, u64, HealthState)> {
        b.iter()
            .map(|b| (b.successes, b.failures, b.state))
            .collect()
    };
    use HealthState::{Failure, NoData, Partial, Success};
    let all = s.health_timeline(&query).await.unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(all[0].start, base);
    assert_eq!(all[0].end, at(1, 0));
    assert_eq!(all[9].end, at(10, 0));
    assert_eq!(
        summary(&all),
        vec![
            (3, 0, Success),
            (1, 1, Partial),
            (0, 0, NoData),
            (0, 2, Failure),
            (0, 0, NoData),
            (0, 0, NoData),
            (0, 0, NoData),
            (0, 0, NoData),
            (0, 0, NoData),
            (1, 0, Success),
        ]
    );

    // The format filter: successes by the record's endpoint format, failures by the trace's
    // endpoint.
    let openai_only = s
        .health_timeline(&HealthQuery {
            api_format: Some(ApiFormat::Openai),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(summary(&openai_only)[0], (1, 0, Success));
    assert!(openai_only[1..].iter().all(|b| b.state == NoData));
    let claude_only = s
        .health_timeline(&HealthQuery {
            api_format: Some(ApiFormat::Claude),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        summary(&claude_only)[..4],
        [
            (2, 0, Success),
            (1, 1, Partial),
            (0, 0, NoData),
            (0, 2, Failure)
        ]
    );

    // The key filter: k2 served the retried request and failed once in bucket 3.
    let k2_only = s
        .health_timeline(&HealthQuery {
            provider_key_id: Some(k2.id),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        summary(&k2_only)[..4],
        [
            (0, 0, NoData),
            (1, 0, Success),
            (0, 0, NoData),
            (0, 1, Failure)
        ]
    );
    // The endpoint filter.
    let by_endpoint = s
        .health_timeline(&HealthQuery {
            endpoint_id: Some(openai.id),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        summary(&by_endpoint),
        summary(&openai_only),
        "one endpoint per format here"
    );

    // Uneven widths: 3 buckets over 10 minutes are 200 s wide, the last one takes the rest.
    let three = s
        .health_timeline(&HealthQuery {
            buckets: 3,
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        three.iter().map(|b| (b.start, b.end)).collect::<Vec<_>>(),
        vec![
            (base, at(3, 20)),
            (at(3, 20), at(6, 40)),
            (at(6, 40), at(10, 0)),
        ]
    );
    assert_eq!(
        summary(&three),
        vec![(4, 2, Partial), (0, 1, Failure), (1, 0, Success)],
        "the failure at 3:30 falls past the first 200 s"
    );

    // Bucket counts are capped; an empty range has no buckets.
    let capped = s
        .health_timeline(&HealthQuery {
            buckets: 100_000,
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(capped.len(), 500);
    assert_eq!(capped.iter().map(|b| b.successes).sum::<u64>(), 5);
    assert_eq!(capped.iter().map(|b| b.failures).sum::<u64>(), 3);
    let one = s
        .health_timeline(&HealthQuery {
            buckets: 0,
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(summary(&one), vec![(5, 3, Partial)]);
    assert!(
        s.health_timeline(&HealthQuery {
            until: base,
            ..query.clone()
        })
        .await
        .unwrap()
        .is_empty()
    );
}

/// Four known records for the usage aggregates: two of user A (one through a global model's
/// alias, one unmodelled), a failure of user B, a pending request of a standalone key.
struct UsageFixture {
    a: User,
    b: User,
    p: Provider,
    g: GlobalModel,
    k1: ProviderKeyId,
    /// 2026-05-01T12:00:00Z, a Friday.
    base: Timestamp,
    /// r1 (A, alias of `g`), r2 (A, gpt-y), r3 (B, failed), r4 (standalone, pending).
    ids: [RequestId; 4],
}

#[allow(clippy::too_many_lines)]
async fn usage_fixture(s: &SqlStore) -> UsageFixture {
    let a = user("ann@example.com");
    s.insert_user(&a).await.unwrap();
    let b = user("bob@example.com");
    s.insert_user(&b).await.unwrap();
    let p = provider("acme");
    s.insert_provider(&p).await.unwrap();
    let mut g = global("claude-x");
    g.display_name = "Claude X".into();
    s.insert_global_model(&g).await.unwrap();
    let k1 = ProviderKeyId::new();
    let base = Timestamp::parse_rfc3339("2026-05-01T12:00:00Z").unwrap();
    let rec = |user: Option<UserId>, model: &str, when: Timestamp| UsageRecord {
        id: RequestId::new(),
        client_request_id: None,
        user_id: user,
        api_key_id: None,
        provider_id: None,
        endpoint_id: None,
        provider_key_id: None,
        global_model_id: None,
        requested_model: model.into(),
        upstream_model: None,
        api_format: ApiFormat::Claude,
        endpoint_api_format: None,
        is_stream: false,
        status: UsageStatus::Completed,
        status_code: Some(200),
        error_type: None,
        error_message: None,
        tokens: TokenUsage::default(),
        cost: CostBreakdown::default(),
        unpriced: false,
        latency_ms: None,
        ttfb_ms: None,
        client_ip: None,
        user_agent: None,
        created_at: when,
        updated_at: when,
    };
    let mut r1 = rec(Some(a.id), "claude-x-alias", base.plus_secs(5 * 60));
    r1.provider_id = Some(p.id);
    r1.provider_key_id = Some(k1);
    r1.global_model_id = Some(g.id);
    r1.is_stream = true;
    r1.tokens = TokenUsage {
        input: 100,
        output: 50,
        cache_creation_5m: 10,
        cache_creation_1h: 20,
        cache_read: 300,
        reasoning: 7,
    };
    r1.cost.total = Usd::from_nanos(1000);
    r1.cost.actual_total = Usd::from_nanos(600);
    r1.latency_ms = Some(1000);
    r1.ttfb_ms = Some(100);
    // The next day, 13:00.
    let mut r2 = rec(Some(a.id), "gpt-y", base.plus_secs(25 * 3600));
    r2.provider_id = Some(p.id);
    r2.api_format = ApiFormat::Openai;
    r2.tokens = TokenUsage {
        input: 200,
        output: 100,
        ..TokenUsage::default()
    };
    r2.cost.total = Usd::from_nanos(3000);
    r2.cost.actual_total = Usd::from_nanos(2000);
    r2.latency_ms = Some(2000);
    let mut r3 = rec(Some(b.id), "claude-x", base.plus_secs(30 * 60));
    r3.status = UsageStatus::Failed;
    r3.status_code = Some(400);
    r3.latency_ms = Some(501);
    // The day before, pending.
    let mut r4 = rec(None, "claude-x", base.plus_secs(-24 * 3600));
    r4.api_key_id = Some(ApiKeyId::new());
    r4.provider_id = Some(p.id);
    r4.global_model_id = Some(g.id);
    r4.is_stream = true;
    r4.status = UsageStatus::Pending;
    r4.status_code = None;
    let ids = [r1.id, r2.id, r3.id, r4.id];
    s.write_batch(&UsageBatch {
        records: vec![r1, r2, r3, r4],
        ..Default::default()
    })
    .await
    .unwrap();
    UsageFixture {
        a,
        b,
        p,
        g,
        k1,
        base,
        ids,
    }
}

async fn usage_filters_narrow_listings(s: &SqlStore) {
    let fx = usage_fixture(s).await;
    let [r1, r2, r3, r4] = fx.ids;
    let ids = |f: UsageFilter| async move {
        let mut got: Vec<RequestId> = s
            .list_usage(&f, Page::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r.id)
            .collect();
        got.sort_by_key(ToString::to_string);
        got
    };
    let sorted = |mut v: Vec<RequestId>| {
        v.sort_by_key(ToString::to_string);
        v
    };
    assert_eq!(ids(UsageFilter::default()).await.len(), 4);
    let by_user = UsageFilter {
        user_id: Some(fx.a.id),
        ..Default::default()
    };
    assert_eq!(ids(by_user).await, sorted(vec![r1, r2]));
    // `model`: the requested name, or the global model's name or id.
    let model = |m: &str| UsageFilter {
        model: Some(m.to_string()),
        ..Default::default()
    };
    assert_eq!(ids(model("claude-x")).await, sorted(vec![r1, r3, r4]));
    assert_eq!(ids(model("claude-x-alias")).await, vec![r1]);
    assert_eq!(ids(model(&fx.g.id.to_string())).await, sorted(vec![r1, r4]));
    assert_eq!(ids(model("gpt-y")).await, vec![r2]);
    assert!(ids(model("nope")).await.is_empty());
    assert_eq!(
        ids(UsageFilter {
            api_format: Some(ApiFormat::Openai),
            ..Default::default()
        })
        .await,
        vec![r2]
    );
    assert_eq!(
        ids(UsageFilter {
            is_stream: Some(true),
            ..Default::default()
        })
        .await,
        sorted(vec![r1, r4])
    );
    assert_eq!(
        ids(UsageFilter {
            is_stream: Some(false),
            ..Default::default()
        })
        .await,
        sorted(vec![r2, r3])
    );
    assert_eq!(
        ids(UsageFilter {
            provider_key_id: Some(fx.k1),
            ..Default::default()
        })
        .await,
        vec![r1]
    );
    assert_eq!(
        ids(UsageFilter {
            provider_id: Some(fx.p.id),
            status: Some("completed".into()),
            ..Default::default()
        })
        .await,
        sorted(vec![r1, r2])
    );
    // `[since, until)` on `created_at`.
    assert_eq!(
        ids(UsageFilter {
            since: Some(fx.base),
            until: Some(fx.base.plus_secs(86_400)),
            ..Default::default()
        })
        .await,
        sorted(vec![r1, r3])
    );
    assert_eq!(
        ids(UsageFilter {
            until: Some(fx.base.plus_secs(5 * 60)),
            ..Default::default()
        })
        .await,
        vec![r4],
        "until is exclusive"
    );
}

/// Usage listings count matches only up to `COUNT_AHEAD` rows past the page: enough for a
/// pager, without a full scan of millions of rows. Within the cap the count is exact.
async fn usage_counts_stop_past_the_page(s: &SqlStore) {
    let fx = usage_fixture(s).await;
    let base = s.get_usage(fx.ids[0]).await.unwrap().unwrap();
    let extra: u32 = COUNT_AHEAD + 60;
    let records: Vec<UsageRecord> = (0..extra)
        .map(|i| UsageRecord {
            id: RequestId::new(),
            status: if i % 2 == 0 {
                UsageStatus::Completed
            } else {
                UsageStatus::Failed
            },
            created_at: fx.base.plus_secs(i64::from(i)),
            ..base.clone()
        })
        .collect();
    s.write_batch(&UsageBatch {
        records,
        ..Default::default()
    })
    .await
    .unwrap();
    let all = i64::from(extra) + 4;
    let list = |f: UsageFilter, limit: u32, offset: u32| async move {
        s.list_usage(&f, Page::new(limit, offset)).await.unwrap()
    };
    // First page: the count stops 1000 rows past it.
    let p = list(UsageFilter::default(), 10, 0).await;
    assert_eq!(p.items.len(), 10);
    assert_eq!(
        (p.total, p.total_capped),
        (i64::from(COUNT_AHEAD) + 10, true)
    );
    // A page whose look-ahead reaches the end counts exactly.
    let p = list(UsageFilter::default(), 10, 100).await;
    assert_eq!((p.total, p.total_capped), (all, false));
    // Exactly at the cap is not "more".
    let cap_at_end = u32::try_from(all).unwrap() - COUNT_AHEAD - 50;
    let p = list(UsageFilter::default(), 50, cap_at_end).await;
    assert_eq!((p.total, p.total_capped), (all, false));
    let p = list(UsageFilter::default(), 50, cap_at_end - 1).await;
    assert_eq!((p.total, p.total_capped), (all - 1, true));
    // The filter applies to the count: half the extra rows failed, plus the fixture's one.
    let failed = UsageFilter {
        status: Some("failed".into()),
        ..Default::default()
    };
    let p = list(failed, 25, 500).await;
    assert_eq!(p.items.len(), 25);
    assert!(p.items.iter().all(|r| r.status == UsageStatus::Failed));
    assert_eq!((p.total, p.total_capped), (i64::from(extra / 2) + 1, false));
}

async fn usage_summary_totals_in_the_database(s: &SqlStore) {
    let fx = usage_fixture(s).await;
    let all = s.usage_summary(&UsageFilter::default()).await.unwrap();
    assert_eq!(
        all,
        UsageSummary {
            requests: 4,
            successes: 2,
            failures: 1,
            input_tokens: 300,
            output_tokens: 150,
            cache_creation_5m_tokens: 10,
            cache_creation_1h_tokens: 20,
            cache_read_tokens: 300,
            cost: Usd::from_nanos(4000),
            actual_cost: Usd::from_nanos(2600),
            // (1000 + 2000 + 501) / 3, rounded down; the pending record has none.
            avg_latency_ms: Some(1167),
            avg_ttfb_ms: Some(100),
        }
    );
    assert_eq!(all.cache_creation_tokens(), 30);
    assert_eq!(all.prompt_tokens(), 630);
    assert!((all.cache_hit_rate() - 300.0 / 630.0).abs() < 1e-12);

    let b = s
        .usage_summary(&UsageFilter {
            user_id: Some(fx.b.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (
            b.requests,
            b.successes,
            b.failures,
            b.cost,
            b.avg_latency_ms,
            b.avg_ttfb_ms
        ),
        (1, 0, 1, Usd::ZERO, Some(501), None)
    );
    assert_eq!(b.cache_hit_rate(), 0.0);

    let a_claude = s
        .usage_summary(&UsageFilter {
            user_id: Some(fx.a.id),
            model: Some("claude-x".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (a_claude.requests, a_claude.cost, a_claude.actual_cost),
        (1, Usd::from_nanos(1000), Usd::from_nanos(600))
    );

    let none = s
        .usage_summary(&UsageFilter {
            user_id: Some(UserId::new()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(none, UsageSummary::default());
}

async fn usage_breakdown_groups_and_orders(s: &SqlStore) {
    let fx = usage_fixture(s).await;
    let all = UsageFilter::default();
    type Brief = (String, Option<String>, u64, i64);
    let brief = |rows: &[UsageGroupRow]| -> Vec<Brief> {
        rows.iter()
            .map(|r| (r.key.clone(), r.label.clone(), r.requests, r.cost.nanos()))
            .collect()
    };

    // Model: the global model's name gathers its alias and the direct requests.
    let by_model = s.usage_breakdown(&all, UsageGroup::Model).await.unwrap();
    assert_eq!(
        brief(&by_model),
        vec![
            ("gpt-y".to_string(), None, 1, 3000),
            (
                "claude-x".to_string(),
                Some("Claude X".to_string()),
                3,
                1000
            ),
        ]
    );
    assert_eq!(
        by_model[1],
        UsageGroupRow {
            key: "claude-x".into(),
            label: Some("Claude X".into()),
            requests: 3,
            input_tokens: 100,
            output_tokens: 50,
            cache_read_tokens: 300,
            cache_creation_tokens: 30,
            cost: Usd::from_nanos(1000),
            actual_cost: Usd::from_nanos(600),
        }
    );

    let by_provider = s.usage_breakdown(&all, UsageGroup::Provider).await.unwrap();
    assert_eq!(
        brief(&by_provider),
        vec![
            (fx.p.id.to_string(), Some("acme".to_string()), 3, 4000),
            (String::new(), None, 1, 0),
        ]
    );
    assert_eq!(by_provider[0].actual_cost, Usd::from_nanos(2600));

    let by_format = s.usage_breakdown(&all, UsageGroup::Format).await.unwrap();
    assert_eq!(
        brief(&by_format),
        vec![
            (ApiFormat::Openai.as_str().to_string(), None, 1, 3000),
            (ApiFormat::Claude.as_str().to_string(), None, 3, 1000),
        ]
    );

    // Ties on cost and requests fall back to the key: "" (the standalone key) first.
    let by_user = s.usage_breakdown(&all, UsageGroup::User).await.unwrap();
    let (lo, hi) = (String::new(), fx.b.id.to_string());
    assert_eq!(
        brief(&by_user),
        vec![
            (fx.a.id.to_string(), Some(fx.a.username.clone()), 2, 4000),
            (lo, None, 1, 0),
            (hi, Some(fx.b.username.clone()), 1, 0),
        ]
    );

    // Days: UTC, oldest first.
    let by_day = s.usage_breakdown(&all, UsageGroup::Day).await.unwrap();
    assert_eq!(
        brief(&by_day),
        vec![
            ("2026-04-30".to_string(), None, 1, 0),
            ("2026-05-01".to_string(), None, 2, 1000),
            ("2026-05-02".to_string(), None, 1, 3000),
        ]
    );
    assert_eq!(by_day[1].input_tokens, 100);

    // Filters apply before grouping.
    let a_by_model = s
        .usage_breakdown(
            &UsageFilter {
                user_id: Some(fx.a.id),
                ..Default::default()
            },
            UsageGroup::Model,
        )
        .await
        .unwrap();
    assert_eq!(
        brief(&a_by_model),
        vec![
            ("gpt-y".to_string(), None, 1, 3000),
            (
                "claude-x".to_string(),
                Some("Claude X".to_string()),
                1,
                1000
            ),
        ]
    );
    let filtered_by_model = s
        .usage_breakdown(
            &UsageFilter {
                model: Some("claude-x".into()),
                ..Default::default()
            },
            UsageGroup::Day,
        )
        .await
        .unwrap();
    assert_eq!(
        brief(&filtered_by_model),
        vec![
            ("2026-04-30".to_string(), None, 1, 0),
            ("2026-05-01".to_string(), None, 2, 1000),
        ]
    );
    assert!(
        s.usage_breakdown(
            &UsageFilter {
                user_id: Some(UserId::new()),
                ..Default::default()
            },
            UsageGroup::Provider,
        )
        .await
        .unwrap()
        .is_empty()
    );
}

async fn usage_heatmap_counts_weekday_and_hour(s: &SqlStore) {
    let fx = usage_fixture(s).await;
    let cell = |weekday: u8, hour: u8, requests: u64| HeatCell {
        weekday,
        hour,
        requests,
    };
    // Thursday 12:00 (r4), Friday 12:05 and 12:30 (r1, r3), Saturday 13:00 (r2).
    assert_eq!(
        s.usage_heatmap(&UsageFilter::default()).await.unwrap(),
        vec![cell(4, 12, 1), cell(5, 12, 2), cell(6, 13, 1)]
    );
    assert_eq!(
        s.usage_heatmap(&UsageFilter {
            user_id: Some(fx.a.id),
            ..Default::default()
        })
        .await
        .unwrap(),
        vec![cell(5, 12, 1), cell(6, 13, 1)]
    );
    // 1970-01-04 was a Sunday (weekday 0); 23:59 is hour 23.
    let c = user("carl@example.com");
    s.insert_user(&c).await.unwrap();
    let sunday = Timestamp::parse_rfc3339("1970-01-04T23:59:00Z").unwrap();
    let rec = UsageRecord {
        id: RequestId::new(),
        user_id: Some(c.id),
        created_at: sunday,
        updated_at: sunday,
        ..s.get_usage(fx.ids[0]).await.unwrap().unwrap()
    };
    let monday = UsageRecord {
        id: RequestId::new(),
        created_at: Timestamp::parse_rfc3339("2026-05-04T00:00:00Z").unwrap(),
        ..rec.clone()
    };
    s.write_batch(&UsageBatch {
        records: vec![rec, monday],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.usage_heatmap(&UsageFilter {
            user_id: Some(c.id),
            ..Default::default()
        })
        .await
        .unwrap(),
        vec![cell(0, 23, 1), cell(1, 0, 1)]
    );
}

/// Records left `pending` / `streaming` by a dead instance become `failed` (`stale`); recent
/// in-flight records and settled ones stay as they are.
async fn stale_in_flight_usage_is_failed(s: &SqlStore) {
    let old = Timestamp::from_millis(now().millis() - 3_600_000);
    let rec = |status: UsageStatus, created_at: Timestamp| UsageRecord {
        id: RequestId::new(),
        client_request_id: None,
        user_id: None,
        api_key_id: None,
        provider_id: None,
        endpoint_id: None,
        provider_key_id: None,
        global_model_id: None,
        requested_model: "m".into(),
        upstream_model: None,
        api_format: ApiFormat::ClaudeCli,
        endpoint_api_format: None,
        is_stream: true,
        status,
        status_code: None,
        error_type: None,
        error_message: None,
        tokens: TokenUsage::default(),
        cost: CostBreakdown::default(),
        unpriced: false,
        latency_ms: None,
        ttfb_ms: None,
        client_ip: None,
        user_agent: None,
        created_at,
        updated_at: created_at,
    };
    let stale_streaming = rec(UsageStatus::Streaming, old);
    let stale_pending = rec(UsageStatus::Pending, old);
    let old_completed = rec(UsageStatus::Completed, old);
    let fresh_streaming = rec(UsageStatus::Streaming, now());
    let all = vec![
        stale_streaming.clone(),
        stale_pending.clone(),
        old_completed.clone(),
        fresh_streaming.clone(),
    ];
    s.write_batch(&UsageBatch {
        records: all,
        ..Default::default()
    })
    .await
    .unwrap();
    let cutoff = Timestamp::from_millis(now().millis() - 60_000);
    assert_eq!(s.fail_stale_usage(cutoff).await.unwrap(), 2);
    for r in [&stale_streaming, &stale_pending] {
        let got = s.get_usage(r.id).await.unwrap().unwrap();
        assert_eq!(got.status, UsageStatus::Failed);
        assert_eq!(got.error_type.as_deref(), Some("stale"));
        assert!(got.error_message.is_some());
        assert!(got.updated_at.millis() > old.millis());
    }
    assert_eq!(
        s.get_usage(old_completed.id).await.unwrap().unwrap(),
        old_completed
    );
    assert_eq!(
        s.get_usage(fresh_streaming.id).await.unwrap().unwrap(),
        fresh_streaming
    );
    // Nothing left to do: a second run changes nothing.
    assert_eq!(s.fail_stale_usage(cutoff).await.unwrap(), 0);
}
