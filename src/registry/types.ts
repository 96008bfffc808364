// Shared vocabulary of the registry client: how kaniko's registry flags reach it, credentials, and
// the errors it raises. Each error says which registry, what happened and what to do.

/** kaniko's registry flags, validated by the CLI. Registry names are as users write them ("host:port"). */
export interface RegistryOptions {
  /** --insecure: push over plain HTTP. */
  insecure: boolean;
  /** --insecure-pull: pull over plain HTTP. */
  insecurePull: boolean;
  /** --insecure-registry (repeatable): push and pull over plain HTTP with these. */
  insecureRegistries: string[];
  /** --skip-tls-verify: push without verifying certificates. */
  skipTlsVerify: boolean;
  /** --skip-tls-verify-pull. */
  skipTlsVerifyPull: boolean;
  /** --skip-tls-verify-registry (repeatable). */
  skipTlsVerifyRegistries: string[];
  /** --registry-certificate registry=path (CA or server certificate for that registry). */
  registryCertificates: Map<string, string>;
  /** --registry-client-cert registry=cert,key (mutual TLS). */
  registryClientCertificates: Map<string, { cert: string; key: string }>;
  /** Directories whose *.crt / *.pem files are trusted in addition to the system CAs (kaniko: /kaniko/ssl/certs). */
  certificateDirectories: string[];
  /** Extra CA bundle files (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS). */
  certificateFiles: string[];
  /** --push-retry / --image-download-retry: extra attempts after the first. */
  pushRetry: number;
  imageDownloadRetry: number;
}

/** Whether a request is for pulling (base images) or pushing (destinations, cache). */
export type RegistryPurpose = 'pull' | 'push';

/** What a keychain knows for a registry (docker config.json `auths` entry, helper output, CI variables). */
export interface Credential {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (config.json `identitytoken`), exchanged at the token endpoint. */
  identityToken?: string;
  /** A bearer token to send as is (config.json `registrytoken`). */
  registryToken?: string;
}

export interface Keychain {
  /** Credentials for a registry host ("docker.io" for Docker Hub), or undefined for anonymous access. */
  resolve(registry: string): Promise<Credential | undefined>;
}

/** A registry failure with the registry, the HTTP status when there was one, and advice. */
export class RegistryError extends Error {
  constructor(
    message: string,
    readonly registry: string,
    readonly status?: number,
    /** Whether trying again may help (5xx, connection reset, timeouts). */
    readonly retryable = false,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** HTTP as the authenticator needs it (token endpoints), provided by the transport so TLS settings apply. */
export interface TokenHttp {
  request(url: string, init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string }): Promise<{ status: number; body: string }>;
}

/** Produces Authorization headers for one registry. */
export interface Authenticator {
  /** The header for these scopes if one is already known (basic credentials, or a cached unexpired token). */
  cached(scopes: string[]): string | undefined;
  /**
   * Answers a 401: given the WWW-Authenticate header value and the scopes the request needs, obtains
   * credentials or a token and returns the Authorization header to retry with. Throws RegistryError when
   * the registry or token server refuses the credentials (message names the registry and what to check).
   */
  challenge(wwwAuthenticate: string, scopes: string[]): Promise<string>;
}

export type AuthenticatorFactory = (registry: string, http: TokenHttp) => Authenticator;
