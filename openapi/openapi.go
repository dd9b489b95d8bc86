// Package openapi embeds the OpenAPI document of the declaw REST API.
package openapi

import _ "embed"

// Spec is openapi.yaml.
//
//go:embed openapi.yaml
var Spec []byte
