//! CRD YAML generation: what `sluice-operator crds` prints and what is committed under
//! `crds/` (and copied for the Helm chart).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use super::{KafkaCluster, KafkaTopic};

/// Directories (relative to the repository root) holding committed copies of the CRDs.
pub const CRD_DIRS: &[&str] = &["crds", "charts/sluice-operator/files/crds"];

/// First line of every generated file.
const HEADER: &str =
    "# Generated from operator/src/crd by `cargo run -p sluice-operator -- crds --write`. Do not edit.\n";

/// One generated CRD file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdFile {
    /// File name, `<plural>.<group>.yaml`.
    pub file_name: String,
    /// Contents.
    pub yaml: String,
}

fn to_file(crd: CustomResourceDefinition) -> Result<CrdFile, yaml_serde::Error> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let body = yaml_serde::to_string(&tidy(crd))?;
    Ok(CrdFile {
        file_name: format!("{name}.yaml"),
        yaml: format!("{HEADER}{body}"),
    })
}

/// Both CRDs as generated from the types, tidied.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![tidy(KafkaCluster::crd()), tidy(KafkaTopic::crd())]
}

/// Both CRDs, one file each.
pub fn crd_files() -> Result<Vec<CrdFile>, yaml_serde::Error> {
    crds().into_iter().map(to_file).collect()
}

/// Remove repeated names from every `required` list of the schema (the derive lists a
/// field twice when it carries CEL rules; the API server refuses duplicates), and declare
/// `metadata.name` where a root rule reports on it.
fn tidy(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            dedupe_required(schema);
            declare_metadata_name(schema);
        }
    }
    crd
}

/// A rule's `fieldPath` must name a field of the schema, and the derive leaves `metadata` out:
/// a root rule about the name (`fieldPath: .metadata.name`, so the API server's error names the
/// field instead of `<nil>`) needs `metadata.name` declared. Structural schemas allow exactly
/// that much of `metadata`.
fn declare_metadata_name(root: &mut JSONSchemaProps) {
    let reports_on_name = root
        .x_kubernetes_validations
        .iter()
        .flatten()
        .any(|rule| rule.field_path.as_deref() == Some(".metadata.name"));
    if !reports_on_name {
        return;
    }
    let name = JSONSchemaProps {
        type_: Some("string".into()),
        ..Default::default()
    };
    let metadata = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some([("name".to_string(), name)].into()),
        ..Default::default()
    };
    root.properties
        .get_or_insert_with(Default::default)
        .insert("metadata".into(), metadata);
}

fn dedupe_required(schema: &mut JSONSchemaProps) {
    if let Some(required) = schema.required.as_mut() {
        let mut seen = std::collections::BTreeSet::new();
        required.retain(|name| seen.insert(name.clone()));
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        dedupe_required(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        dedupe_required(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        dedupe_required(extra);
    }
}

/// Both CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, yaml_serde::Error> {
    let docs = crds()
        .iter()
        .map(yaml_serde::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(docs.iter().map(|d| format!("---\n{d}")).collect::<String>())
}
