//! The objects a ReplicatedDatabase should have, built from its spec and the placement/failover decisions:
//! member Pods (labels, role environment, downward API, per-ordinal volumes, node constraints), member PVCs,
//! the `-rw`/`-ro`/`-members` Services and the engine scripts ConfigMap. Pure: no client.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EnvVar, EnvVarSource, ExecAction, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimVolumeSource, Pod, Probe, SecretKeySelector, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::engine;
use super::model::{ANNOTATION_APPLIED_ROLE, ANNOTATION_NODE, ANNOTATION_SPEC_HASH, Role};
use super::placement::{Constraint, MemberPlan};
use crate::api::replicated_database::{
    LABEL_NAME, LABEL_ORDINAL, LABEL_ROLE, Mode, ReplicatedDatabase, RetentionPolicy,
};

/// Where the downward-API files (labels, annotations) are mounted in every container.
pub const PODINFO_DIR: &str = "/etc/berth/podinfo";
/// Where the engine profile's scripts are mounted.
pub const SCRIPTS_DIR: &str = "/etc/berth/scripts";
const PODINFO_VOLUME: &str = "berth-podinfo";
const SCRIPTS_VOLUME: &str = "berth-scripts";

/// Why a desired object cannot be built: each names the object and the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DesiredError {
    /// The object has no namespace or name (never true for objects read from the API).
    #[error("ReplicatedDatabase has no {0}")]
    MissingMetadata(&'static str),
    /// The template has no containers.
    #[error("{0}: spec.template.spec.containers is empty")]
    NoContainers(String),
    /// The engine names a container the template lacks.
    #[error(
        "{rdb}: spec.engine.{engine}.container {container:?} is not in spec.template.spec.containers"
    )]
    UnknownContainer {
        rdb: String,
        engine: &'static str,
        container: String,
    },
}

/// Pod name of a member.
pub fn pod_name(rdb: &str, ordinal: i32) -> String {
    format!("{rdb}-{ordinal}")
}

/// PVC name of a member's claim (the StatefulSet naming).
pub fn pvc_name(claim: &str, rdb: &str, ordinal: i32) -> String {
    format!("{claim}-{rdb}-{ordinal}")
}

/// Names of the three Services.
pub fn service_names(rdb: &str) -> [String; 3] {
    [
        format!("{rdb}-rw"),
        format!("{rdb}-ro"),
        format!("{rdb}-members"),
    ]
}

/// The scripts ConfigMap's name.
pub fn scripts_config_map_name(rdb: &str) -> String {
    format!("{rdb}-berth-scripts")
}

/// The labels every member Pod carries (and the Services select on).
pub fn selector_labels(rdb: &str) -> BTreeMap<String, String> {
    [(LABEL_NAME.to_string(), rdb.to_string())].into()
}

/// The label selector string of the member Pods (status.selector, for the scale subresource).
pub fn selector_string(rdb: &str) -> String {
    format!("{LABEL_NAME}={rdb}")
}

struct Names {
    name: String,
    namespace: String,
}

fn names(rdb: &ReplicatedDatabase) -> Result<Names, DesiredError> {
    Ok(Names {
        name: rdb
            .metadata
            .name
            .clone()
            .ok_or(DesiredError::MissingMetadata("metadata.name"))?,
        namespace: rdb
            .metadata
            .namespace
            .clone()
            .ok_or(DesiredError::MissingMetadata("metadata.namespace"))?,
    })
}

fn owner(rdb: &ReplicatedDatabase) -> Vec<OwnerReference> {
    rdb.controller_owner_ref(&()).into_iter().collect()
}

/// The container that runs the database (the engine's `container`, or the first).
pub fn engine_container(rdb: &ReplicatedDatabase) -> Result<String, DesiredError> {
    let containers = rdb
        .spec
        .template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let first = containers
        .first()
        .ok_or_else(|| DesiredError::NoContainers(rdb.name_any()))?;
    let (engine, wanted) = match (&rdb.spec.engine.postgres, &rdb.spec.engine.generic) {
        (Some(p), _) => ("postgres", p.container.clone()),
        (None, Some(g)) => ("generic", g.container.clone()),
        (None, None) => ("generic", None),
    };
    match wanted {
        None => Ok(first.name.clone()),
        Some(c) if containers.iter().any(|x| x.name == c) => Ok(c),
        Some(container) => Err(DesiredError::UnknownContainer {
            rdb: rdb.name_any(),
            engine,
            container,
        }),
    }
}

/// A member Pod in the given role.
pub fn member_pod(
    rdb: &ReplicatedDatabase,
    plan: &MemberPlan,
    role: Role,
    avoid_node: Option<&str>,
) -> Result<Pod, DesiredError> {
    let n = names(rdb)?;
    let name = pod_name(&n.name, plan.ordinal);
    let template = &rdb.spec.template;
    let db_container = engine_container(rdb)?;
    let mut spec = template.spec.clone().unwrap_or_default();

    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.extend(selector_labels(&n.name));
    labels.insert(LABEL_ORDINAL.into(), plan.ordinal.to_string());
    labels.insert(LABEL_ROLE.into(), role.as_str().into());
    let mut annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    annotations.insert(ANNOTATION_APPLIED_ROLE.into(), role.as_str().into());
    annotations.insert(
        ANNOTATION_SPEC_HASH.into(),
        super::rollout::spec_hash(&rdb.spec),
    );
    if let Some(node) = &plan.member_node {
        annotations.insert(ANNOTATION_NODE.into(), node.clone());
    }

    spec.hostname = Some(name.clone());
    spec.subdomain = Some(format!("{}-members", n.name));
    add_node_constraint(&mut spec.affinity, &plan.constraint, avoid_node);

    // Volumes: one per claim template (replacing a template volume of the same name, as a StatefulSet
    // does), the downward API, and the engine scripts.
    let mut volumes = spec.volumes.take().unwrap_or_default();
    for claim in &rdb.spec.volume_claim_templates {
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != claim_name);
        volumes.push(Volume {
            name: claim_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc_name(&claim_name, &n.name, plan.ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    volumes.push(Volume {
        name: PODINFO_VOLUME.into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![
                downward_file("labels", "metadata.labels"),
                downward_file("annotations", "metadata.annotations"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let postgres = rdb.spec.engine.postgres.as_ref();
    if postgres.is_some() {
        volumes.push(Volume {
            name: SCRIPTS_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: scripts_config_map_name(&n.name),
                default_mode: Some(0o555),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    spec.volumes = Some(volumes);

    let env = role_env(rdb, &n, plan.ordinal, role);
    let mounts = {
        let mut m = vec![VolumeMount {
            name: PODINFO_VOLUME.into(),
            mount_path: PODINFO_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }];
        if postgres.is_some() {
            m.push(VolumeMount {
                name: SCRIPTS_VOLUME.into(),
                mount_path: SCRIPTS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        m
    };
    let decorate = |c: &mut Container| {
        let e = c.env.get_or_insert_with(Vec::new);
        e.retain(|v| !env.iter().any(|b| b.name == v.name));
        e.extend(env.iter().cloned());
        let vm = c.volume_mounts.get_or_insert_with(Vec::new);
        vm.retain(|v| !mounts.iter().any(|b| b.mount_path == v.mount_path));
        vm.extend(mounts.iter().cloned());
    };
    spec.containers.iter_mut().for_each(decorate);
    if let Some(init) = spec.init_containers.as_mut() {
        init.iter_mut().for_each(decorate);
    }
    if let Some(pg) = postgres {
        let data_dir = pg
            .data_directory
            .clone()
            .unwrap_or_else(|| "/var/lib/postgresql/data/pgdata".into());
        if let Some(c) = spec.containers.iter_mut().find(|c| c.name == db_container) {
            c.command = Some(vec!["sh".into(), format!("{SCRIPTS_DIR}/entrypoint.sh")]);
            c.args = None;
            let e = c.env.get_or_insert_with(Vec::new);
            e.retain(|v| v.name != "PGDATA" && v.name != "POSTGRES_PASSWORD");
            e.push(EnvVar {
                name: "PGDATA".into(),
                value: Some(data_dir),
                ..Default::default()
            });
            e.push(EnvVar {
                name: "POSTGRES_PASSWORD".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: pg.password_secret.clone(),
                        key: "password".into(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            if c.readiness_probe.is_none() {
                c.readiness_probe = Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(vec!["sh".into(), format!("{SCRIPTS_DIR}/ready.sh")]),
                    }),
                    period_seconds: Some(2),
                    timeout_seconds: Some(5),
                    failure_threshold: Some(2),
                    ..Default::default()
                });
            }
            if c.ports.as_ref().is_none_or(|p| p.is_empty()) {
                c.ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                    name: Some("postgres".into()),
                    container_port: 5432,
                    ..Default::default()
                }]);
            }
        }
    }

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(n.namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(owner(rdb)),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

fn downward_file(path: &str, field: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field.into(),
            api_version: None,
        }),
        ..Default::default()
    }
}

fn role_env(rdb: &ReplicatedDatabase, n: &Names, ordinal: i32, role: Role) -> Vec<EnvVar> {
    let plain = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    };
    let members = format!("{}-members.{}.svc", n.name, n.namespace);
    let mut env = vec![
        plain("BERTH_NAME", n.name.clone()),
        plain("BERTH_ORDINAL", ordinal.to_string()),
        plain("BERTH_ROLE", role.as_str().into()),
        plain(
            "BERTH_PRIMARY_HOST",
            format!("{}-rw.{}.svc", n.name, n.namespace),
        ),
        plain("BERTH_MEMBERS_SERVICE", members.clone()),
        plain("BERTH_PODINFO", PODINFO_DIR.into()),
        field("BERTH_POD_UID", "metadata.uid"),
        field("BERTH_POD_NAME", "metadata.name"),
    ];
    if rdb.spec.mode == Mode::Peers {
        env.push(plain(
            "BERTH_SEED_HOST",
            format!("{}.{members}", pod_name(&n.name, 0)),
        ));
    }
    env
}

/// ANDs the member's constraint into every required node-affinity term of the template.
fn add_node_constraint(
    affinity: &mut Option<Affinity>,
    constraint: &Constraint,
    avoid_node: Option<&str>,
) {
    let mut exprs: Vec<NodeSelectorRequirement> = Vec::new();
    let req = |key: &str, op: &str, values: Vec<String>| NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: Some(values),
    };
    match constraint {
        Constraint::Any => {}
        Constraint::Node(node) => {
            exprs.push(req("kubernetes.io/hostname", "In", vec![node.clone()]))
        }
        Constraint::Selector(sel) => {
            exprs.extend(sel.iter().map(|(k, v)| req(k, "In", vec![v.clone()])))
        }
    }
    if let Some(node) = avoid_node {
        exprs.push(req("kubernetes.io/hostname", "NotIn", vec![node.into()]));
    }
    if exprs.is_empty() {
        return;
    }
    let aff = affinity.get_or_insert_with(Default::default);
    let na = aff.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: vec![],
        });
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_expressions
            .get_or_insert_with(Vec::new)
            .extend(exprs.iter().cloned());
    }
}

/// The PVCs of a member, from the claim templates. They carry an owner reference only when the
/// ReplicatedDatabase's deletion should delete them (`whenDeleted: Delete`).
pub fn member_pvcs(
    rdb: &ReplicatedDatabase,
    plan: &MemberPlan,
) -> Result<Vec<PersistentVolumeClaim>, DesiredError> {
    let n = names(rdb)?;
    let delete_with_owner = rdb
        .spec
        .persistent_volume_claim_retention_policy
        .when_deleted
        == RetentionPolicy::Delete;
    Ok(rdb
        .spec
        .volume_claim_templates
        .iter()
        .map(|t| {
            let claim = t.metadata.name.clone().unwrap_or_default();
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels(&n.name));
            labels.insert(LABEL_ORDINAL.into(), plan.ordinal.to_string());
            let mut annotations = t.metadata.annotations.clone().unwrap_or_default();
            if let Some(node) = &plan.member_node {
                annotations.insert(ANNOTATION_NODE.into(), node.clone());
            }
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(pvc_name(&claim, &n.name, plan.ordinal)),
                    namespace: Some(n.namespace.clone()),
                    labels: Some(labels),
                    annotations: Some(annotations),
                    owner_references: delete_with_owner.then(|| owner(rdb)),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect())
}

/// `<name>-rw` (the primary, or every peer), `<name>-ro` (Ready replicas: Endpoints only list Ready Pods)
/// and the headless `<name>-members` (every member, Ready or not, for per-member DNS).
pub fn services(rdb: &ReplicatedDatabase) -> Result<Vec<Service>, DesiredError> {
    let n = names(rdb)?;
    let mut ports: Vec<ServicePort> = Vec::new();
    for c in rdb
        .spec
        .template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
    {
        for p in c.ports.as_deref().unwrap_or_default() {
            if p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                && !ports.iter().any(|x| x.port == p.container_port)
            {
                ports.push(ServicePort {
                    name: Some(
                        p.name
                            .clone()
                            .unwrap_or_else(|| format!("port-{}", p.container_port)),
                    ),
                    port: p.container_port,
                    target_port: Some(IntOrString::Int(p.container_port)),
                    ..Default::default()
                });
            }
        }
    }
    if ports.is_empty() && rdb.spec.engine.postgres.is_some() {
        ports.push(ServicePort {
            name: Some("postgres".into()),
            port: 5432,
            target_port: Some(IntOrString::Int(5432)),
            ..Default::default()
        });
    }
    let [rw, ro, members] = service_names(&n.name);
    let (rw_role, ro_role) = match rdb.spec.mode {
        Mode::PrimaryReplica => (Role::Primary, Role::Replica),
        Mode::Peers => (Role::Peer, Role::Peer),
    };
    let svc = |name: String, role: Option<Role>, headless: bool| {
        let mut selector = selector_labels(&n.name);
        if let Some(r) = role {
            selector.insert(LABEL_ROLE.into(), r.as_str().into());
        }
        Service {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(n.namespace.clone()),
                labels: Some(selector_labels(&n.name)),
                owner_references: Some(owner(rdb)),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(selector),
                ports: Some(ports.clone()),
                cluster_ip: headless.then(|| "None".to_string()),
                publish_not_ready_addresses: headless.then_some(true),
                ..Default::default()
            }),
            status: None,
        }
    };
    Ok(vec![
        svc(rw, Some(rw_role), false),
        svc(ro, Some(ro_role), false),
        svc(members, None, true),
    ])
}

/// The ConfigMap holding the engine profile's scripts (only for profiles that have scripts).
pub fn scripts_config_map(rdb: &ReplicatedDatabase) -> Result<Option<ConfigMap>, DesiredError> {
    let n = names(rdb)?;
    if rdb.spec.engine.postgres.is_none() {
        return Ok(None);
    }
    Ok(Some(ConfigMap {
        metadata: ObjectMeta {
            name: Some(scripts_config_map_name(&n.name)),
            namespace: Some(n.namespace),
            labels: Some(selector_labels(&n.name)),
            owner_references: Some(owner(rdb)),
            ..Default::default()
        },
        data: Some(
            engine::POSTGRES_SCRIPTS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdb(yaml: &str) -> ReplicatedDatabase {
        let mut r: ReplicatedDatabase = serde_yaml::from_str(yaml).unwrap();
        r.metadata.uid = Some("uid-1".into());
        r
    }

    const PG: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: ReplicatedDatabase
metadata: {name: pg, namespace: db}
spec:
  template:
    metadata: {labels: {app: pg}}
    spec:
      containers: [{name: postgres, image: postgres:15, env: [{name: BERTH_ROLE, value: bogus}]}]
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: In, values: [ssd]}]}]
  volumeClaimTemplates: [{metadata: {name: data}, spec: {accessModes: [ReadWriteOnce], storageClassName: berth-local, resources: {requests: {storage: 1Gi}}}}]
  replicas: {count: 3}
  engine: {postgres: {passwordSecret: pg-secret}}
"#;

    fn env_of(pod: &Pod, name: &str) -> Option<String> {
        pod.spec.as_ref().unwrap().containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    #[test]
    fn member_pod_carries_name_labels_role_env_volumes_and_owner() {
        let r = rdb(PG);
        let plan = MemberPlan {
            ordinal: 2,
            constraint: Constraint::Node("n7".into()),
            member_node: Some("n7".into()),
        };
        let pod = member_pod(&r, &plan, Role::Replica, None).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("pg-2"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "pg");
        assert_eq!(labels[LABEL_ROLE], "replica");
        assert_eq!(labels[LABEL_ORDINAL], "2");
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[ANNOTATION_NODE],
            "n7"
        );
        assert_eq!(
            pod.metadata.owner_references.as_ref().unwrap()[0].name,
            "pg"
        );
        assert_eq!(
            env_of(&pod, "BERTH_ROLE").as_deref(),
            Some("replica"),
            "Berth's env replaces the template's"
        );
        assert_eq!(
            env_of(&pod, "BERTH_PRIMARY_HOST").as_deref(),
            Some("pg-rw.db.svc")
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.subdomain.as_deref(), Some("pg-members"));
        let vols = spec.volumes.as_ref().unwrap();
        let data = vols.iter().find(|v| v.name == "data").unwrap();
        assert_eq!(
            data.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-pg-2"
        );
        assert!(vols.iter().any(|v| v.name == PODINFO_VOLUME));
        assert!(vols.iter().any(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|c| c.name == "pg-berth-scripts")
        }));
        let c = &spec.containers[0];
        assert_eq!(
            c.command.as_ref().unwrap()[1],
            "/etc/berth/scripts/entrypoint.sh"
        );
        assert!(c.readiness_probe.is_some());
        // The template's node affinity is kept and ANDed with the member's node.
        let terms = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        let exprs = terms[0].match_expressions.as_ref().unwrap();
        assert_eq!(exprs.len(), 2);
        assert_eq!(exprs[1].key, "kubernetes.io/hostname");
        assert_eq!(exprs[1].values.as_ref().unwrap()[0], "n7");
    }

    #[test]
    fn rescheduled_primary_avoids_the_lost_node() {
        let r = rdb(PG);
        let plan = MemberPlan {
            ordinal: 0,
            constraint: Constraint::Any,
            member_node: None,
        };
        let pod = member_pod(&r, &plan, Role::Primary, Some("n1")).unwrap();
        let aff = pod.spec.unwrap().affinity.unwrap().node_affinity.unwrap();
        let exprs = aff
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0]
            .match_expressions
            .clone()
            .unwrap();
        assert!(
            exprs
                .iter()
                .any(|e| e.operator == "NotIn" && e.values.as_ref().unwrap()[0] == "n1")
        );
    }

    #[test]
    fn pvcs_are_named_by_claim_name_and_ordinal_and_owned_only_when_deleted_with_the_database() {
        for (policy, owned) in [("Retain", false), ("Delete", true)] {
            let yaml =
                format!("{PG}  persistentVolumeClaimRetentionPolicy: {{whenDeleted: {policy}}}\n");
            let r = rdb(&yaml);
            let plan = MemberPlan {
                ordinal: 1,
                constraint: Constraint::Any,
                member_node: None,
            };
            let pvcs = member_pvcs(&r, &plan).unwrap();
            assert_eq!(pvcs[0].metadata.name.as_deref(), Some("data-pg-1"));
            assert_eq!(
                pvcs[0].metadata.owner_references.is_some(),
                owned,
                "{policy}"
            );
            assert_eq!(
                pvcs[0].metadata.labels.as_ref().unwrap()[LABEL_ORDINAL],
                "1"
            );
        }
    }

    #[test]
    fn services_select_roles_and_members_is_headless() {
        let r = rdb(PG);
        let svcs = services(&r).unwrap();
        let names: Vec<_> = svcs
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["pg-rw", "pg-ro", "pg-members"]);
        assert_eq!(
            svcs[0].spec.as_ref().unwrap().selector.as_ref().unwrap()[LABEL_ROLE],
            "primary"
        );
        assert_eq!(
            svcs[1].spec.as_ref().unwrap().selector.as_ref().unwrap()[LABEL_ROLE],
            "replica"
        );
        let members = svcs[2].spec.as_ref().unwrap();
        assert_eq!(members.cluster_ip.as_deref(), Some("None"));
        assert!(!members.selector.as_ref().unwrap().contains_key(LABEL_ROLE));
        assert_eq!(
            svcs[0].spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
            5432
        );
    }

    #[test]
    fn unknown_engine_container_is_an_error_naming_the_field() {
        let r = rdb(&PG.replace(
            "{passwordSecret: pg-secret}",
            "{passwordSecret: pg-secret, container: nope}",
        ));
        let plan = MemberPlan {
            ordinal: 0,
            constraint: Constraint::Any,
            member_node: None,
        };
        let err = member_pod(&r, &plan, Role::Primary, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spec.engine.postgres.container \"nope\""),
            "{err}"
        );
    }
}
