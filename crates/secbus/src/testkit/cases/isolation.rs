//! Who sees what: tenants never see each other; type patterns select exactly.

use chrono::Utc;

use crate::Subscriber;
use crate::error::{ErrorKind, Result};
use crate::event::{Event, TenantId};
use crate::subscription::{StartAt, SubscribeOptions, Subscription, TypePattern};
use crate::testkit::case::Verdict;
use crate::testkit::context::{Cx, acme, event, globex, ids, pattern, sorted_ids};
use crate::testkit::wait::{next, nothing_more, take, take_acked};

fn assert_tenant(events: &[Event], tenant: &TenantId, what: &str) {
    for e in events {
        assert_eq!(
            &e.tenant, tenant,
            "{what}: a subscriber of {tenant} received event {} of {}",
            e.id, e.tenant
        );
    }
}

async fn tail_events(sub: &mut Subscription, n: usize, what: &str) -> Vec<Event> {
    take(sub, n, what)
        .await
        .iter()
        .map(|d| d.event().clone())
        .collect()
}

pub(crate) async fn tenant_isolation(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let (a, b) = (acme(), globex());
    let start = Utc::now() - chrono::Duration::seconds(1);
    // The same group name in both tenants: two different groups.
    let mut a_group = bus
        .subscribe(SubscribeOptions::group(a.clone(), "workers"))
        .await?;
    let mut b_group = bus
        .subscribe(SubscribeOptions::group(b.clone(), "workers"))
        .await?;
    let mut a_tail = bus.subscribe(SubscribeOptions::tail(a.clone())).await?;
    let mut b_tail = bus.subscribe(SubscribeOptions::tail(b.clone())).await?;

    let mut a_sent = Vec::new();
    let mut b_sent = Vec::new();
    for n in 0..10 {
        let e = event(&a, "auth.login.failed", n);
        bus.publish(e.clone()).await?;
        a_sent.push(e);
        let e = event(&b, "auth.login.failed", 100 + n);
        bus.publish(e.clone()).await?;
        b_sent.push(e);
    }

    let got = take_acked(&mut a_group, 10, "acme's group").await?;
    assert_tenant(&got, &a, "group");
    assert_eq!(sorted_ids(&got), sorted_ids(&a_sent));
    let got = take_acked(&mut b_group, 10, "globex's group").await?;
    assert_tenant(&got, &b, "group");
    assert_eq!(sorted_ids(&got), sorted_ids(&b_sent));
    let got = tail_events(&mut a_tail, 10, "acme's tail").await;
    assert_tenant(&got, &a, "tail");
    assert_eq!(ids(&got), ids(&a_sent));
    let got = tail_events(&mut b_tail, 10, "globex's tail").await;
    assert_tenant(&got, &b, "tail");
    assert_eq!(ids(&got), ids(&b_sent));

    if bus.capabilities().replay {
        for start in [
            StartAt::Beginning,
            StartAt::Sequence(0),
            StartAt::Time(start),
        ] {
            let what = format!("acme's replay from {start:?}");
            let mut replay = bus
                .subscribe(SubscribeOptions::tail(a.clone()).start(start))
                .await?;
            let got = tail_events(&mut replay, 10, &what).await;
            assert_tenant(&got, &a, &what);
            assert_eq!(ids(&got), ids(&a_sent), "{what}");
            nothing_more(&mut [(&mut replay, &what)]).await;
        }
        let mut late = bus
            .subscribe(SubscribeOptions::group(a.clone(), "late").start(StartAt::Beginning))
            .await?;
        let got = take_acked(&mut late, 10, "acme's new group from the beginning").await?;
        assert_tenant(&got, &a, "a new group from the beginning");
        assert_eq!(sorted_ids(&got), sorted_ids(&a_sent));
        nothing_more(&mut [(&mut late, "acme's new group from the beginning")]).await;
    }

    // An id is deduplicated within its tenant only: one tenant cannot
    // suppress another's event by publishing its id first.
    let mut stolen = event(&b, "auth.login.failed", 200);
    stolen.id = a_sent[0].id.clone();
    let r = bus.publish(stolen.clone()).await?;
    assert!(
        !r.duplicate,
        "globex's event was dropped as a duplicate of acme's id"
    );
    let got = tail_events(&mut b_tail, 1, "globex's event reusing acme's id").await;
    assert_eq!((&got[0].id, &got[0].tenant), (&stolen.id, &b));
    assert_eq!(got[0].data(), stolen.data());
    take_acked(&mut b_group, 1, "globex's event reusing acme's id").await?;
    let mut also = event(&a, "auth.login.failed", 201);
    also.id = b_sent[0].id.clone();
    assert!(
        !bus.publish(also).await?.duplicate,
        "acme's event was dropped as globex's duplicate"
    );
    tail_events(&mut a_tail, 1, "acme's event reusing globex's id").await;
    take_acked(&mut a_group, 1, "acme's event reusing globex's id").await?;

    // Dead letters are kept per tenant.
    let a_bad = event(&a, "edr.process.started", 50);
    let b_bad = event(&b, "edr.process.started", 150);
    bus.publish(a_bad.clone()).await?;
    bus.publish(b_bad.clone()).await?;
    let d = next(&mut a_group, "acme's poison event").await;
    assert_eq!(d.event().id, a_bad.id);
    d.term("acme cannot process it").await?;
    let d = next(&mut b_group, "globex's poison event").await;
    assert_eq!(d.event().id, b_bad.id);
    d.term("globex cannot process it").await?;
    let a_dls = bus.dead_letters(&a, 100).await?;
    let b_dls = bus.dead_letters(&b, 100).await?;
    assert_eq!(a_dls.len(), 1, "acme's dead letters: {a_dls:?}");
    assert_eq!(b_dls.len(), 1, "globex's dead letters: {b_dls:?}");
    assert_eq!(a_dls[0].event.id, a_bad.id);
    assert_eq!(b_dls[0].event.id, b_bad.id);

    // One tenant cannot reach another's dead letter by its id.
    let b_dl = &b_dls[0].id;
    assert!(
        hidden_from(&bus, &a, b_dl).await?,
        "acme redrove or deleted globex's dead letter"
    );
    assert_eq!(bus.dead_letters(&b, 100).await?.len(), 1);

    // A redrive reaches its own tenant's group only.
    bus.redrive(&b, b_dl).await?;
    let d = next(&mut b_group, "globex's redriven event").await;
    assert_eq!(d.event().id, b_bad.id);
    assert_eq!(d.event().tenant, b);
    d.ack().await?;
    let _ = tail_events(&mut b_tail, 1, "globex's tail: its poison event").await;
    let _ = tail_events(&mut a_tail, 1, "acme's tail: its poison event").await;
    nothing_more(&mut [
        (&mut a_group, "acme's group after globex's redrive"),
        (&mut a_tail, "acme's tail after globex's redrive"),
        (&mut b_group, "globex's group after the redrive"),
        (&mut b_tail, "globex's tail after the redrive"),
    ])
    .await;
    Ok(Verdict::Passed)
}

/// True when `tenant` can neither redrive nor delete the dead letter `id` of
/// another tenant.
async fn hidden_from(bus: &crate::Bus, tenant: &TenantId, id: &str) -> Result<bool> {
    let redrive_refused = match bus.redrive(tenant, id).await {
        Err(e) if e.kind() == ErrorKind::NotFound => true,
        Err(e) => return Err(e),
        Ok(_) => false,
    };
    let deleted = bus.delete_dead_letter(tenant, id).await?;
    Ok(redrive_refused && !deleted)
}

pub(crate) async fn type_filters(cx: &Cx<'_>) -> Result<Verdict> {
    let bus = cx.open().await?;
    let t = acme();
    let types = [
        "auth",
        "auth.login",
        "auth.login.failed",
        "auth.logout",
        "authx.login",
        "edr.process.started",
        "edr.login.failed",
    ];
    let expectations: [(&str, &[&str]); 6] = [
        ("auth.login.failed", &["auth.login.failed"]),
        ("auth.*", &["auth.login", "auth.logout"]),
        (
            "auth.>",
            &["auth.login", "auth.login.failed", "auth.logout"],
        ),
        ("*.login.failed", &["auth.login.failed", "edr.login.failed"]),
        ("auth", &["auth"]),
        (">", &types),
    ];
    let mut subs = Vec::new();
    for (i, (p, expected)) in expectations.iter().enumerate() {
        let tail = bus
            .subscribe(SubscribeOptions::tail(t.clone()).types(pattern(p)))
            .await?;
        let group = bus
            .subscribe(SubscribeOptions::group(t.clone(), format!("filter-{i}")).types(pattern(p)))
            .await?;
        subs.push((*p, *expected, tail, group));
    }
    for (n, ty) in types.iter().enumerate() {
        bus.publish(event(&t, ty, n as u64)).await?;
    }
    for (p, expected, tail, group) in &mut subs {
        let got = tail_events(tail, expected.len(), &format!("tail of {p}")).await;
        let got: Vec<&str> = got.iter().map(|e| e.ty.as_str()).collect();
        assert_eq!(&got, expected, "tail of pattern {p}");
        let got = take_acked(group, expected.len(), &format!("group of {p}")).await?;
        let mut got: Vec<&str> = got.iter().map(|e| e.ty.as_str()).collect();
        got.sort_unstable();
        let mut expected = expected.to_vec();
        expected.sort_unstable();
        assert_eq!(got, expected, "group of pattern {p}");
    }
    let labels: Vec<(String, String)> = subs
        .iter()
        .map(|(p, ..)| (format!("tail of {p}"), format!("group of {p}")))
        .collect();
    let mut quiet: Vec<(&mut Subscription, &str)> = Vec::new();
    for ((_, _, tail, group), (tl, gl)) in subs.iter_mut().zip(&labels) {
        quiet.push((tail, tl));
        quiet.push((group, gl));
    }
    nothing_more(&mut quiet).await;

    for bad in [
        "auth.>.failed",
        "Auth.login",
        "",
        "auth..login",
        "auth.lo gin",
    ] {
        let err = TypePattern::new(bad).expect_err("an invalid pattern was accepted");
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidOptions,
            "pattern {bad:?}: {err}"
        );
    }
    Ok(Verdict::Passed)
}
