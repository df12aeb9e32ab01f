import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { generate } from 'selfsigned';
import { CommyError, ErrorCode } from '../core/errors.js';

/** PEM text of a certificate (chain) and its private key. */
export interface TlsMaterial {
  cert: string;
  key: string;
}

/**
 * Reads the configured certificate and key and checks that they parse and belong together, so a wrong
 * file is a clear start-up error rather than a TLS handshake failure on the first client.
 */
export function loadTls(tls: { cert: string; key: string }): TlsMaterial {
  const cert = readPem('tls.cert', tls.cert);
  const key = readPem('tls.key', tls.key);
  let x509: X509Certificate;
  let privateKey: KeyObject;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw invalid(`tls.cert: ${tls.cert} is not a PEM certificate`, err);
  }
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw invalid(`tls.key: ${tls.key} is not an unencrypted PEM private key`, err);
  }
  if (!x509.checkPrivateKey(privateKey)) throw invalid(`tls.key: ${tls.key} does not match the certificate ${tls.cert}`);
  return { cert, key };
}

function readPem(field: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw invalid(`${field}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, err);
  }
}

function invalid(message: string, cause?: unknown): CommyError {
  return new CommyError(ErrorCode.CONFIG_INVALID, message, cause === undefined ? undefined : { cause });
}

const VALID_DAYS = 30;

/**
 * A throwaway certificate for development (`commy serve --tls-self-signed`): CN localhost, valid for
 * localhost, 127.0.0.1, ::1 and any `hostnames` given, 30 days. Clients must be told to trust it.
 */
export async function selfSignedTls(hostnames: string[] = []): Promise<TlsMaterial> {
  const names = [...new Set(['localhost', '127.0.0.1', '::1', ...hostnames])];
  const notBeforeDate = new Date(Date.now() - 60_000); // a minute back: tolerate clients' clock skew
  const notAfterDate = new Date(notBeforeDate.getTime() + VALID_DAYS * 24 * 3600 * 1000);
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate,
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: names.map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })) },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}
