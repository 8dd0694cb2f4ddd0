//! The subscription policy set through the host and its compiled wasm
//! (`shared/domain.md`, SUB-2..SUB-5).

use rulehost::wire::{
    Actor, AuthorizeDecision, BillingDecision, BillingInput, Cycle, CycleUnit, Period, Subject,
};
use rulehost::{Error, Isolation, Operators};
use serde_json::json;

use crate::support::{at, bundled, contract_of, customer, engine, lock, request};

const NOW: &str = "2026-11-22T10:00:00Z";

fn subscription_operator(settings: serde_json::Value) -> Operators {
    let engine = engine(Isolation::Fresh);
    let operators = Operators::new();
    operators
        .install(
            "acme",
            bundled(&engine, "subscription", 1),
            &settings,
            at(NOW),
        )
        .unwrap();
    operators
}

fn locked_customer() -> Subject {
    customer(vec![lock("payment_default", "2026-11-01T00:00:00Z", None)])
}

fn authorize(
    operators: &Operators,
    action: &str,
    actor: Actor,
    subject: Subject,
) -> AuthorizeDecision {
    let evaluation = operators
        .authorize("acme", at(NOW), &request(action, actor, subject))
        .unwrap();
    assert_eq!(evaluation.diagnostic, None);
    evaluation.decision
}

const LOCK_TEXT: &str = "reason `payment_default`, by `anna` since 2026-11-01T00:00:00Z";

fn refused_on_customer(action: &str) -> AuthorizeDecision {
    AuthorizeDecision::deny(
        "customer_locked",
        format!(
            "`{action}` is refused while the customer is locked ({LOCK_TEXT}): its data cannot be changed and no orders are accepted"
        ),
    )
}

fn refused_on_contract(action: &str, allowed: &str) -> AuthorizeDecision {
    AuthorizeDecision::deny(
        "customer_locked",
        format!(
            "`{action}` is refused while the customer is locked ({LOCK_TEXT}): only {allowed} are possible on a contract"
        ),
    )
}

const DEFAULT_ALLOWED: &str =
    "`end_contract`, `terminate_extraordinarily`, `annul_contract`, `postpone_contract`";

#[test]
fn sub_2_locked_customer_data_and_orders_are_refused_for_staff_and_portal() {
    let operators = subscription_operator(json!({}));
    for actor in [Actor::staff("anna"), Actor::self_service("c-1")] {
        for action in ["change_customer", "place_order"] {
            assert_eq!(
                authorize(&operators, action, actor.clone(), locked_customer()),
                refused_on_customer(action),
                "{action} by {actor:?}"
            );
        }
        for action in ["change_contract", "upgrade", "downgrade", "add_addon"] {
            assert_eq!(
                authorize(
                    &operators,
                    action,
                    actor.clone(),
                    contract_of(locked_customer())
                ),
                refused_on_contract(action, DEFAULT_ALLOWED),
                "{action} by {actor:?}"
            );
        }
    }
    // The same requests on an unlocked customer are allowed.
    assert_eq!(
        authorize(
            &operators,
            "change_customer",
            Actor::self_service("c-1"),
            customer(vec![])
        ),
        AuthorizeDecision::Allow
    );
    assert_eq!(
        authorize(
            &operators,
            "upgrade",
            Actor::staff("anna"),
            contract_of(customer(vec![]))
        ),
        AuthorizeDecision::Allow
    );
}

#[test]
fn sub_2_a_timed_lock_stops_refusing_once_it_has_ended() {
    let operators = subscription_operator(json!({}));
    let ended = customer(vec![lock(
        "deferral",
        "2026-11-01T00:00:00Z",
        Some("2026-11-15T00:00:00Z"),
    )]);
    assert_eq!(
        authorize(&operators, "change_customer", Actor::staff("anna"), ended),
        AuthorizeDecision::Allow
    );
    let future = customer(vec![lock("deferral", "2026-12-01T00:00:00Z", None)]);
    assert_eq!(
        authorize(&operators, "change_customer", Actor::staff("anna"), future),
        AuthorizeDecision::Allow
    );
}

fn billing_input(contract: Subject, billed_until: &str) -> BillingInput {
    BillingInput {
        contract,
        billed_until: at(billed_until),
        cycle: Cycle {
            every: 1,
            unit: CycleUnit::Month,
        },
    }
}

fn with_automatic_billing(mut contract: Subject) -> Subject {
    contract.switches.insert("automatic_billing".into(), true);
    contract
}

#[test]
fn sub_3_no_billing_runs_while_the_customer_is_locked() {
    let operators = subscription_operator(json!({}));
    let locked = billing_input(
        with_automatic_billing(contract_of(locked_customer())),
        "2026-11-01T00:00:00Z",
    );
    let evaluation = operators.billing("acme", at(NOW), &locked).unwrap();
    assert_eq!(
        evaluation.decision,
        BillingDecision::Skip {
            code: "customer_locked".into(),
            reason: format!("no billing while the customer is locked: {LOCK_TEXT}"),
        }
    );

    let unlocked = billing_input(
        with_automatic_billing(contract_of(customer(vec![]))),
        "2026-11-01T00:00:00Z",
    );
    let evaluation = operators.billing("acme", at(NOW), &unlocked).unwrap();
    assert_eq!(
        evaluation.decision,
        BillingDecision::Proceed {
            periods: vec![Period {
                start: at("2026-11-01T00:00:00Z"),
                end: at("2026-12-01T00:00:00Z"),
            }]
        }
    );
}

#[test]
fn sub_3_billing_skips_a_contract_whose_automatic_billing_is_off() {
    let operators = subscription_operator(json!({}));
    let input = billing_input(contract_of(customer(vec![])), "2026-11-01T00:00:00Z");
    assert_eq!(
        operators.billing("acme", at(NOW), &input).unwrap().decision,
        BillingDecision::Skip {
            code: "automatic_billing_off".into(),
            reason: "automatic billing is off for contract `k-1`".into(),
        }
    );
}

#[test]
fn sub_4_locked_contract_allows_only_end_terminate_annul_postpone() {
    let operators = subscription_operator(json!({}));
    for action in [
        "end_contract",
        "terminate_extraordinarily",
        "annul_contract",
        "postpone_contract",
    ] {
        assert_eq!(
            authorize(
                &operators,
                action,
                Actor::staff("anna"),
                contract_of(locked_customer())
            ),
            AuthorizeDecision::Allow,
            "{action}"
        );
    }
    for action in [
        "change_contract",
        "upgrade",
        "downgrade",
        "add_addon",
        "change_payment_method",
        "resume_contract",
    ] {
        assert_eq!(
            authorize(
                &operators,
                action,
                Actor::staff("anna"),
                contract_of(locked_customer())
            ),
            refused_on_contract(action, DEFAULT_ALLOWED),
            "{action}"
        );
    }
}

#[test]
fn sub_4_the_operator_configures_the_actions_still_possible() {
    let operators = subscription_operator(json!({ "allowed_while_locked": ["end_contract"] }));
    assert_eq!(
        authorize(
            &operators,
            "end_contract",
            Actor::staff("anna"),
            contract_of(locked_customer())
        ),
        AuthorizeDecision::Allow
    );
    assert_eq!(
        authorize(
            &operators,
            "postpone_contract",
            Actor::staff("anna"),
            contract_of(locked_customer())
        ),
        refused_on_contract("postpone_contract", "`end_contract`")
    );
}

#[test]
fn sub_4_settings_are_validated_at_install_naming_field_and_value() {
    let engine = engine(Isolation::Fresh);
    let operators = Operators::new();
    let install = |settings| {
        operators.install(
            "acme",
            bundled(&engine, "subscription", 1),
            &settings,
            at(NOW),
        )
    };

    let error = install(json!({ "allowed_while_locked": ["end_contract", "", "end_contract"] }))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "policy `subscription@1` refused the settings of operator `acme`: allowed_while_locked[1]: action `` is empty; allowed_while_locked[2]: action `end_contract` is listed twice"
    );
    let error = install(json!({ "allowed_while_locked": "end_contract" })).unwrap_err();
    assert_eq!(
        error.to_string(),
        "policy `subscription@1` refused the settings of operator `acme`: allowed_while_locked: invalid type: string \"end_contract\", expected a sequence"
    );
    let error = install(json!(["end_contract"])).unwrap_err();
    assert!(matches!(error, Error::SettingsNotObject { .. }));
    assert_eq!(
        error.to_string(),
        "settings of operator `acme` must be a JSON object, got `[\"end_contract\"]`"
    );
    // Nothing was installed by the refused attempts.
    assert!(matches!(
        operators.active("acme"),
        Err(Error::UnknownOperator(_))
    ));
}

#[test]
fn sub_5_payments_and_dunning_continue_while_locked() {
    let operators = subscription_operator(json!({}));
    for action in ["collect_payment", "run_dunning"] {
        assert_eq!(
            authorize(
                &operators,
                action,
                Actor::system("billing"),
                contract_of(locked_customer())
            ),
            AuthorizeDecision::Allow
        );
        assert_eq!(
            authorize(
                &operators,
                action,
                Actor::system("billing"),
                locked_customer()
            ),
            AuthorizeDecision::Allow
        );
    }
}

#[test]
fn sub_1_only_staff_lock_and_unlock() {
    let operators = subscription_operator(json!({}));
    assert_eq!(
        authorize(&operators, "lock", Actor::staff("anna"), customer(vec![])),
        AuthorizeDecision::Allow
    );
    assert_eq!(
        authorize(
            &operators,
            "unlock",
            Actor::staff("anna"),
            locked_customer()
        ),
        AuthorizeDecision::Allow
    );
    assert_eq!(
        authorize(
            &operators,
            "unlock",
            Actor::self_service("c-1"),
            locked_customer()
        ),
        AuthorizeDecision::deny("staff_only", "only staff may unlock a customer (SUB-1)")
    );
    assert_eq!(
        authorize(&operators, "unlock", Actor::staff("anna"), customer(vec![])),
        AuthorizeDecision::deny("not_locked", "the customer is not locked")
    );
    assert_eq!(
        authorize(&operators, "lock", Actor::staff("anna"), locked_customer()),
        AuthorizeDecision::deny(
            "already_locked",
            format!("the customer is already locked: {LOCK_TEXT}")
        )
    );
}
